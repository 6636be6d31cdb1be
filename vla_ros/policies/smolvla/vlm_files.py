"""The VLM's configuration and tokenizer: from a local directory, or tiny and built in.

LeRobot SmolVLA checkpoints do not contain SmolVLM2's ``config.json`` or tokenizer; they
name a hub model (``vlm_model_name``). vla_ros never goes online: ``vlm_path`` must be a
local directory holding them (e.g. a downloaded ``SmolVLM2-500M-Video-Instruct``).
The ``tiny`` preset carries its VLM configuration in code and a byte-level tokenizer
(256 byte tokens, no merges, so any text encodes) built here with ``tokenizers``.
"""

from __future__ import annotations

from pathlib import Path

from vla_ros.policies.contract import PolicyLoadError

FAKE_IMAGE_TOKEN = '<fake_token_around_image>'
GLOBAL_IMAGE_TOKEN = '<global-img>'
TINY_SPECIALS = ('<|endoftext|>', '<|im_start|>', '<|im_end|>', '<image>', FAKE_IMAGE_TOKEN,
                 GLOBAL_IMAGE_TOKEN)
VLM_DIR = 'vlm'  # where save_pretrained puts the VLM files it was built from


def tiny_tokenizer():
    """A byte-level BPE tokenizer: 256 byte tokens + SmolVLM's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token='<|endoftext|>', eos_token='<|endoftext|>',
        additional_special_tokens=list(TINY_SPECIALS[1:]))


def resolve_vlm_path(vlm_path: str, model_path: Path | None) -> Path:
    """The local VLM directory: ``vlm_path``, else ``<model_path>/vlm``; never online."""
    if vlm_path:
        path = Path(vlm_path).expanduser()
        if not path.is_dir():
            raise PolicyLoadError(f'smolvla: vlm_path {str(path)!r} is not a directory')
    elif model_path is not None and (model_path / VLM_DIR).is_dir():
        path = model_path / VLM_DIR
    else:
        raise PolicyLoadError(
            'smolvla: this checkpoint needs the SmolVLM configuration and tokenizer, which '
            'LeRobot checkpoints do not contain: pass vlm_path:=<local directory of the VLM '
            'named in config.json "vlm_model_name", e.g. SmolVLM2-500M-Video-Instruct> '
            '(nothing is downloaded)')
    if not (path / 'config.json').is_file():
        raise PolicyLoadError(f'smolvla: {path} has no config.json (the SmolVLM config)')
    return path


def load_vlm_config(source):
    """A transformers ``SmolVLMConfig`` from a dict or a local directory."""
    from transformers import SmolVLMConfig

    try:
        if isinstance(source, dict):
            config = SmolVLMConfig(**source)
        else:
            config = SmolVLMConfig.from_pretrained(str(source), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many error types
        raise PolicyLoadError(f'smolvla: unusable SmolVLM config from {source!r}: {exc}') \
            from exc
    if config.text_config.model_type != 'llama':
        raise PolicyLoadError(f'smolvla: the VLM text model must be a Llama (SmolLM2), got '
                              f'{config.text_config.model_type!r}')
    return config


def load_tokenizer(path: Path):
    """The VLM's tokenizer from a local directory (offline)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many error types
        raise PolicyLoadError(f'smolvla: no usable tokenizer in {path}: {exc}') from exc


def image_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the fake-image and global-image tokens (looked up, never assumed).

    SmolVLM's tokenizer exposes them as ``fake_image_token_id`` / ``global_image_token_id``
    (what LeRobot reads); otherwise the token strings are looked up in the vocabulary.
    """
    ids = []
    for attr, token in (('fake_image_token_id', FAKE_IMAGE_TOKEN),
                        ('global_image_token_id', GLOBAL_IMAGE_TOKEN)):
        index = getattr(tokenizer, attr, None)
        if index is None:
            index = tokenizer.convert_tokens_to_ids(token)
        if index is None or index == tokenizer.unk_token_id:
            raise PolicyLoadError(f'smolvla: add_image_special_tokens needs {token!r}, which '
                                  f'the tokenizer lacks')
        ids.append(int(index))
    return ids[0], ids[1]


def save_vlm(directory: Path, vlm_config, tokenizer) -> None:
    """Write the VLM config and tokenizer so the checkpoint reloads without vlm_path."""
    directory.mkdir(parents=True, exist_ok=True)
    vlm_config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
