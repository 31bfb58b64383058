#!/usr/bin/env bash
# interleaved: old (8f5a80f, before the runtime redesign) vs new (main), same venv
. /work/venv/bin/activate
cd /tmp/ovh
for round in 3 4; do
  for side in old new; do
    if [ $side = old ]; then R=/work/wt/old; else R=/work/main; fi
    echo "== round $round $side $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    (cd $R && PYTHONPATH=$R/src python bench/server_latency.py --runs 20 --json /tmp/ovh/server_${side}_${round}.json) > /tmp/ovh/server_${side}_${round}.log 2>&1
    (cd $R && PYTHONPATH=$R/src python bench/foundation_rtf.py --repeats 3 --markdown) > /tmp/ovh/rtf_${side}_${round}.md 2>&1
  done
done
echo done $(date -u +%H:%M:%S)
