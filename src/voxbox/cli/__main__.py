from voxbox.cli import main

main()
