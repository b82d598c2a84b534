#!/usr/bin/env python3
"""Log in continuously from N clients until STOP_FILE exists (bench/extra.sh).

  login_storm.py BASE USER PASSWORD N STOP_FILE

Each client is a fresh browser per login: GET /login for the form's token
and its cookie, then POST /login. Prints how many logins succeeded.
"""
import http.client
import os
import re
import sys
import threading
import time
import urllib.parse

base, user, password, n, stop_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlsplit(base)
ok = [0] * n
failed = [0] * n
statuses = [dict() for _ in range(n)]


def client(i):
    while not os.path.exists(stop_file):
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            c.request("GET", "/login")
            r = c.getresponse()
            html = r.read().decode()
            cookie = "; ".join(v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie")
            token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
            body = urllib.parse.urlencode({"username": user, "password": password, "csrf_token": token})
            c.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
            r = c.getresponse()
            r.read()
            if r.status == 303:
                ok[i] += 1
            else:
                failed[i] += 1
                statuses[i][r.status] = statuses[i].get(r.status, 0) + 1
            c.close()
        except Exception:
            failed[i] += 1
            time.sleep(0.1)


start = time.time()
threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.time() - start
by_status = {}
for d in statuses:
    for k, v in d.items():
        by_status[k] = by_status.get(k, 0) + v
print(f"{sum(ok)} logins in {took:.0f} s, {sum(ok) / took:.1f}/s, {sum(failed)} failed {by_status or ''}")
