#!/usr/bin/env bash
# Install a 32k SentencePiece tokenizer (Llama-2 style, Apache-2.0) for the OpenVLA-family,
# RT-2-style and pi0-style policies: it ships inside the mistral-common wheel on PyPI. We
# take only that file (installing mistral-common itself would downgrade numpy) and convert it
# once to a transformers tokenizer directory in $VENV/share/vla_ros/tokenizer_32k.
set -euo pipefail
venv=$(cd "$1" && pwd)
version=1.13.1
dest="$venv/share/vla_ros/tokenizer_32k"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip --disable-pip-version-check download -q --no-deps \
  "mistral-common==$version" -d "$work" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" - "$work" "$dest" <<'PY'
import json, pathlib, sys, zipfile
from transformers import AutoTokenizer
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob('mistral_common-*.whl'))
src = work / 'sp'
src.mkdir()
with zipfile.ZipFile(wheel) as zf:
    (src / 'tokenizer.model').write_bytes(zf.read('mistral_common/data/tokenizer.model.v1'))
(src / 'tokenizer_config.json').write_text(json.dumps({
    'tokenizer_class': 'LlamaTokenizer', 'bos_token': '<s>', 'eos_token': '</s>',
    'unk_token': '<unk>', 'add_bos_token': True, 'add_eos_token': False, 'legacy': True}))
tokenizer = AutoTokenizer.from_pretrained(str(src))
assert len(tokenizer) == 32000, len(tokenizer)
tokenizer.save_pretrained(str(dest))
(dest / 'SOURCE').write_text(f'{wheel.name}: mistral_common/data/tokenizer.model.v1 '
                             '(Apache-2.0), converted with transformers\n')
PY
