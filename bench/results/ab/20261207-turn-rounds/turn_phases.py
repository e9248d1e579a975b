# Where the first turns of a bench run go, from kube-apiserver's audit log
# (build/bench/audit-<size>.log): for each cluster's first turn that applied
# its workloads (its first GET to the next cluster GET), the median time of
# each step, in ms: the GET; the applied-images patch; the TopoServer, Cell
# and TableGroup; the Shard; the Secrets and backup PVC; the workloads; the
# end (status writes and Event); and the gap before the next turn's GET.
# Usage: python3 turn_phases.py AUDIT_LOG...
import json,sys,statistics
from datetime import datetime
def ts(s): return datetime.fromisoformat(s.replace('Z','+00:00')).timestamp()
for f in sys.argv[1:]:
    ev=[]
    for l in open(f):
        e=json.loads(l)
        if e.get('stage')!='ResponseComplete' or e['verb'] in ('watch','list'): continue
        o=e.get('objectRef',{})
        ev.append((ts(e['requestReceivedTimestamp']),ts(e['stageTimestamp']),e['verb'],o.get('resource'),o.get('subresource') or '',o.get('name') or ''))
    ev.sort()
    seen=set(); ph={'get':[], 'img':[], 'crs':[], 'shard':[], 'early':[], 'objects':[], 'end':[], 'gap_next':[]}
    for i,x in enumerate(ev):
        if not(x[2]=='get' and x[3]=='multigresclusters') or x[5] in seen: continue
        c=x[5]; seen.add(c)
        # turn: until next get multigresclusters
        j=i+1
        while j<len(ev) and not (ev[j][2]=='get' and ev[j][3]=='multigresclusters'): j+=1
        t=ev[i:j]
        if not any(y[3]=='statefulsets' for y in t): continue
        def first(p): 
            for y in t:
                if p(y): return y
        def last(p):
            r=None
            for y in t:
                if p(y): r=y
            return r
        img=first(lambda y:y[3]=='multigresclusters' and y[2]=='patch' and not y[4])
        crs=last(lambda y:y[3] in('tablegroups','cells','toposervers') and not y[4])
        sh=first(lambda y:y[3]=='shards' and not y[4])
        ear=last(lambda y:y[3] in('secrets','persistentvolumeclaims'))
        obj=last(lambda y:y[3] in('services','deployments','statefulsets','configmaps','poddisruptionbudgets'))
        end=last(lambda y:y[4]=='status' or y[3]=='events')
        if not all([img,crs,sh,ear,obj,end]): continue
        ph['get'].append(x[1]-x[0]); ph['img'].append(img[1]-x[1]); ph['crs'].append(crs[1]-img[1]); ph['shard'].append(sh[1]-crs[1])
        ph['early'].append(ear[1]-sh[1]); ph['objects'].append(obj[1]-ear[1]); ph['end'].append(end[1]-obj[1])
        if j<len(ev): ph['gap_next'].append(ev[j][0]-end[1])
    print(f.split('/')[-1], len(ph['get']), ' '.join(f"{k}={round(statistics.median(v)*1000)}" for k,v in ph.items() if v))
