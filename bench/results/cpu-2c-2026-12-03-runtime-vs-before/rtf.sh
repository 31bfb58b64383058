. /work/venv/bin/activate
for round in 5 6 7; do for side in old new; do
 if [ $side = old ]; then R=/work/wt/old; else R=/work/main; fi
 (cd $R && PYTHONPATH=$R/src python bench/foundation_rtf.py --repeats 3 --markdown) > /tmp/ovh/rtf_${side}_${round}.md 2>&1
done; done
