"""The 32k SentencePiece text tokenizer of the LLM-based families (installed by setup).

Real OpenVLA checkpoints carry the Llama-2 tokenizer; it cannot be downloaded here, so the
project installs an Apache-2.0 32k SentencePiece tokenizer of the same kind (from the
mistral-common wheel, see scripts/fetch_tokenizer.sh). Token ids differ from Llama-2's:
code that needs a special id (e.g. the lone-space token OpenVLA appends, 29871 in
Llama-2) asks the tokenizer instead of hard-coding it.
"""

import functools
import os
import sys
from pathlib import Path

from vla_ros.policies.contract import PolicyLoadError

ENV_VAR = 'VLA_ROS_TOKENIZER_DIR'


def tokenizer_dir() -> Path:
    """Directory of the installed tokenizer (override with $VLA_ROS_TOKENIZER_DIR)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(sys.prefix) / 'share' / 'vla_ros' / 'tokenizer_32k'


@functools.lru_cache(maxsize=4)
def load_text_tokenizer(path: str | None = None):
    """Load the tokenizer from a local directory only (never from a hub)."""
    from transformers import AutoTokenizer

    directory = Path(path) if path else tokenizer_dir()
    if not (directory / 'tokenizer.json').is_file():
        raise PolicyLoadError(f'no tokenizer in {directory}: run `make setup` (it runs '
                              f'scripts/fetch_tokenizer.sh) or set ${ENV_VAR}')
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
