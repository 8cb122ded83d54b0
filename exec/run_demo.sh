#!/usr/bin/env bash
# The demo: sets up the environment, builds amfmn, synthesises a small remote-sensing set,
# builds its vocabulary, prints the dataset statistics and trains AMFMN on it on the CPU
# (4 epochs of one fold; the per-epoch table shows validation recall climbing), then
# evaluates the best checkpoint on the test split, indexes the images and searches them, and
# locates sentences in large synthetic scenes (SeLo indicators, with a regression guard on Rsu).
set -euo pipefail
cd "$(dirname "$0")/.."
source exec/env.sh
cargo build --release --quiet
amfmn="${CARGO_TARGET_DIR:-target}/release/amfmn"

echo "== amfmn synth: 400 synthetic aerial scenes, 128x128"
"$amfmn" synth --out data/demo_precomp --images 400 --size 128 --seed 0
echo
echo "== amfmn vocab"
"$amfmn" vocab --data_path data/demo_precomp --splits train,test --threshold 5 --out vocab/demo_vocab.json
echo
echo "== amfmn inspect --path_opt option/demo_AMFMN.yaml"
"$amfmn" inspect --path_opt option/demo_AMFMN.yaml
echo
echo "== amfmn train --path_opt option/demo_AMFMN.yaml --device cpu"
rm -rf checkpoint/demo logs/demo
"$amfmn" train --path_opt option/demo_AMFMN.yaml --device cpu --set model.resnet_weights=none
echo
echo "== amfmn test --path_opt option/demo_AMFMN.yaml"
"$amfmn" test --path_opt option/demo_AMFMN.yaml --device cpu
echo
echo "== amfmn index + retrieve: search the images by sentence"
"$amfmn" index --checkpoint checkpoint/demo/0 --images data/demo_precomp/images --out checkpoint/demo/images.index --device cpu
"$amfmn" retrieve --index checkpoint/demo/images.index --query "two white houses next to a baseball field" --top 5 \
    --html checkpoint/demo/search.html
echo "(thumbnails of these results: checkpoint/demo/search.html)"
echo
echo "== amfmn synth-scenes + selo: locate sentences in six 2048x2048 synthetic scenes (SeLo indicators)"
"$amfmn" synth-scenes --out data/selo_synth --scenes 6 --seed 0
"$amfmn" selo --annotations data/selo_synth/annotations/anno.json --images data/selo_synth/scenes \
    --checkpoint checkpoint/demo/0 --out checkpoint/demo/selo --device cpu
# Regression guard: a flat map scores Rsu 0.5069; the demo model's maps must stay clearly above.
"$amfmn" selo --annotations data/selo_synth/annotations/anno.json --heatmaps checkpoint/demo/selo --json |
    python3 -c 'import json, sys; rsu = json.load(sys.stdin)["mean"]["rsu"]; sys.exit(f"mean Rsu {rsu:.4f} is not above 0.60: the demo model no longer localises" if rsu <= 0.60 else 0)'
echo
echo "== amfmn serve: the demo checkpoint as a service for a few seconds (loopback only)"
rm -rf checkpoint/demo/serve
token=$("$amfmn" serve token add --data checkpoint/demo/serve --user demo --role admin 2>/dev/null)
coproc SERVE { exec "$amfmn" serve --data checkpoint/demo/serve --checkpoint checkpoint/demo/0 --listen 127.0.0.1:0 --device cpu --log warn; }
trap 'kill "$SERVE_PID" 2>/dev/null || true' EXIT
read -r line <&"${SERVE[0]}"
echo "$line"
python3 - "${line#listening on }" "$token" data/demo_precomp/images <<'PY'
import json, os, sys, time, urllib.request

address, token, folder = sys.argv[1:4]
auth = {"Authorization": "Bearer " + token}
types = {".jpg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff"}

def call(method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(f"http://{address}{path}", data=body, method=method,
                                     headers={**auth, "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)

names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1] in types)[::40]  # one per class
for name in names:
    with open(os.path.join(folder, name), "rb") as f:
        reply = call("POST", f"/api/v1/images?name={name}", f.read(), types[os.path.splitext(name)[1]])
    print(f"uploaded {name:<24} id {reply['id']}")
deadline = time.time() + 60
while "pending" in call("GET", "/api/v1/status")["images"] and time.time() < deadline:
    time.sleep(0.2)
query = "two white houses next to a baseball field"
found = call("POST", "/api/v1/search/text", json.dumps({"query": query, "limit": 5}).encode())
print(f"search: {query!r} over {found['total_visible']} images")
print(f"{'rank':>4}  {'id':>3}  {'score':>7}  name")
for hit in found["results"]:
    print(f"{hit['rank']:>4}  {hit['id']:>3}  {hit['score']:7.4f}  {hit['name']}")
PY
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || true
trap - EXIT
