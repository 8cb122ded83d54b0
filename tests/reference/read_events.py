"""Reads TensorBoard event files with TensorBoard's own reader and prints, per scalar tag, the
number of points and the last (step, value).

Usage: read_events.py LOGDIR  -> JSON {tag: [count, last_step, last_value]}
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1])
acc.Reload()
out = {}
for tag in acc.Tags()["scalars"]:
    events = acc.Scalars(tag)
    out[tag] = [len(events), events[-1].step, events[-1].value]
print(json.dumps(out))
