import sys, json, urllib.request, urllib.parse
base='http://127.0.0.9:17220'
kind, body = sys.argv[1], sys.argv[2]
if kind=='exec':
    req=urllib.request.Request(base+'/db/execute', data=body.encode(), headers={'Content-Type':'application/json'})
else:
    req=urllib.request.Request(base+'/db/query?level=none&q='+urllib.parse.quote(body))
try:
    r=urllib.request.urlopen(req, timeout=30); print(r.status, r.read().decode()[:2000])
except urllib.error.HTTPError as e: print(e.code, e.read().decode()[:2000])
except Exception as e: print('ERR', e)
