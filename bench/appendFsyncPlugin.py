#!/usr/bin/python3
"""The simplest durable db_write plugin: a baseline to measure against (stdlib python).
The team's reference plugin, measured on a real lightningd in issue 14 (npm run bench, mode python).
Registers the db_write hook; for each call appends one JSON line
{"data_version":..,"writes":[..]} to $DBAPPEND_FILE, then os.fsync()s it,
and only then answers {"result":"continue"}.  File is opened once (O_APPEND)."""
import codecs, json, os, sys

PATH = os.environ.get("DBAPPEND_FILE", "dbappend.jsonl")
DO_FSYNC = os.environ.get("DBAPPEND_FSYNC", "1") == "1"
fd = os.open(PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
stdout = sys.stdout


def reply(req_id, result):
    stdout.write(json.dumps({"jsonrpc": "2.0", "id": req_id, "result": result}) + "\n\n")
    stdout.flush()


def handle(msg):
    method, req_id, params = msg.get("method"), msg.get("id"), msg.get("params")
    if method == "db_write":
        line = json.dumps(params, separators=(",", ":")).encode() + b"\n"
        os.write(fd, line)            # single write() on an O_APPEND fd
        if DO_FSYNC:
            os.fsync(fd)              # durable before we let lightningd commit
        reply(req_id, {"result": "continue"})
    elif method == "getmanifest":
        reply(req_id, {"options": [], "rpcmethods": [], "subscriptions": [],
                       "hooks": [{"name": "db_write"}], "dynamic": False})
    elif method == "init":
        reply(req_id, {})
    elif req_id is not None:
        stdout.write(json.dumps({"jsonrpc": "2.0", "id": req_id,
                                 "error": {"code": -32601, "message": "unknown method"}}) + "\n\n")
        stdout.flush()


def main():
    dec = json.JSONDecoder()
    buf = ""
    utf8 = codecs.getincrementaldecoder("utf-8")()
    sfd = sys.stdin.fileno()
    while True:
        chunk = os.read(sfd, 1 << 20)
        if not chunk:
            return
        buf += utf8.decode(chunk)
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                msg, end = dec.raw_decode(buf)
            except json.JSONDecodeError:
                break
            buf = buf[end:]
            handle(msg)


if __name__ == "__main__":
    main()
