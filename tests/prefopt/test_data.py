"""Tensor files: a LoRA saved twice is one LoRA, whatever order safetensors wrote its metadata in."""

import json
import struct

import torch


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str], order: list[str]) -> bytes:
    """A safetensors file by hand, its header keys in ``order`` (as safetensors' own writer varies them)."""
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        data = tensor.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {key: metadata[key] for key in order}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def test_one_lora_saved_twice_has_one_digest_though_its_bytes_differ(tmp_path):
    from prefopt.data import tensors_digest

    tensors = {"a.lora_A.weight": torch.arange(6.0).reshape(2, 3), "a.lora_B.weight": torch.ones(3, 2)}
    metadata = {"format": "pt", "lora_adapter_metadata": '{"r": 2}', "extra": "x"}
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    first.write_bytes(_safetensors_bytes(tensors, metadata, ["format", "lora_adapter_metadata", "extra"]))
    second.write_bytes(_safetensors_bytes(tensors, metadata, ["extra", "format", "lora_adapter_metadata"]))
    assert first.read_bytes() != second.read_bytes()
    assert tensors_digest(first) == tensors_digest(second)
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(_safetensors_bytes({**tensors, "a.lora_B.weight": torch.ones(3, 2) * 2}, metadata,
                                           list(metadata)))
    assert tensors_digest(changed) != tensors_digest(first)
