#!/usr/bin/env python3
"""Read a TensorBoard run directory with TensorBoard's own EventAccumulator.

Usage: python scripts/tb_read.py RUN_DIR

Prints JSON on stdout:
  {"scalars":    {tag: [[step, value], ...]},
   "histograms": {tag: [[step, num, min, max], ...]},
   "images":     {tag: [[step, width, height], ...]},
   "texts":      {tag: [[step, text], ...]}}

It is the oracle for wick's TensorBoard logger (core/src/tb.rs): what this script
sees is what TensorBoard shows. All events are kept (size_guidance 0 for every
kind) and orphaned data is purged after SessionLog START events as TensorBoard
does (purge_orphaned_data=True, the default). Needs the `tensorboard` package.
"""

import json
import os
import sys


def main(argv):
    if len(argv) != 2:
        print("usage: python scripts/tb_read.py RUN_DIR", file=sys.stderr)
        return 2
    run_dir = argv[1]
    if not os.path.isdir(run_dir):
        print(f"tb_read.py: '{run_dir}' is not a directory", file=sys.stderr)
        return 2

    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError as e:
        print(f"tb_read.py: needs the `tensorboard` package ({e})", file=sys.stderr)
        return 2

    size_guidance = {
        ea.COMPRESSED_HISTOGRAMS: 0,
        ea.IMAGES: 0,
        ea.AUDIO: 0,
        ea.SCALARS: 0,
        ea.HISTOGRAMS: 0,
        ea.TENSORS: 0,
    }
    acc = ea.EventAccumulator(run_dir, size_guidance=size_guidance, purge_orphaned_data=True)
    acc.Reload()
    tags = acc.Tags()

    out = {"scalars": {}, "histograms": {}, "images": {}, "texts": {}}
    for tag in sorted(tags.get(ea.SCALARS, [])):
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in sorted(tags.get(ea.HISTOGRAMS, [])):
        out["histograms"][tag] = [
            [e.step, e.histogram_value.num, e.histogram_value.min, e.histogram_value.max]
            for e in acc.Histograms(tag)
        ]
    for tag in sorted(tags.get(ea.IMAGES, [])):
        out["images"][tag] = [[e.step, e.width, e.height] for e in acc.Images(tag)]

    try:
        text_tags = acc.PluginTagToContent("text")
    except KeyError:  # no text summaries at all
        text_tags = {}
    for tag in sorted(text_tags):
        rows = []
        for e in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            items = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1).tolist()]
            rows.append([e.step, items[0] if len(items) == 1 else items])
        out["texts"][tag] = rows

    json.dump(out, sys.stdout)  # ASCII-only: safe whatever the locale
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
