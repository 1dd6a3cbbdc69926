"""Write a header-only GGUF chat model (no tensors) for tests that read headers and load nothing."""

from __future__ import annotations

from pathlib import Path


def write_header_only_gguf(path: Path, chat_template: str | None = "{{ messages }}") -> Path:
    """A ``llama`` GGUF with one block and, unless None, ``tokenizer.chat_template``: enough for
    ``read_gguf`` (and so for model resolution and doctor's header checks), not for llama.cpp."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    if chat_template is not None:
        writer.add_string("tokenizer.chat_template", chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
