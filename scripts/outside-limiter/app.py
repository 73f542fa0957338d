# An outside server-side limiter for scripts/outside-limiter/run.sh (not part of the crate).
# usage: app.py PORT STRATEGY QUOTA, e.g. app.py 18080 moving-window "10 per second"
import sys, time, threading
from flask import Flask, jsonify
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

strategy = sys.argv[2] if len(sys.argv) > 2 else "moving-window"
quota = sys.argv[3] if len(sys.argv) > 3 else "10 per second"
app = Flask(__name__)
app.config["RATELIMIT_HEADERS_ENABLED"] = True
limiter = Limiter(get_remote_address, app=app, default_limits=[quota], strategy=strategy, storage_uri="memory://")
state = {"hits": 0, "refused": 0, "down_until": 0.0}
lock = threading.Lock()

@app.after_request
def count(resp):
    with lock:
        state["hits"] += 1
        if resp.status_code == 429:
            state["refused"] += 1
    return resp

@app.route("/")
def index():
    return "ok"

@app.route("/outage")
@limiter.exempt
def outage():
    if time.time() < state["down_until"]:
        return "down", 503
    return "ok"

@app.route("/stats")
@limiter.exempt
def stats():
    return jsonify(state)

@app.route("/reset/<float:down>")
@limiter.exempt
def reset(down):
    with lock:
        state.update(hits=0, refused=0, down_until=time.time() + down)
    return "ok"

app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
