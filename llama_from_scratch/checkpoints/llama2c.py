"""Read (and write) llama2.c checkpoints: the legacy `.bin` export and `.pt` training checkpoints.

The legacy ("version 0") `.bin` file, from llama2.c's export.py, is

    7 x int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len
    float32 tensors:  tok_embeddings, then for every layer in turn: attention_norm, wq, wk,
                      wv, wo, ffn_norm, w1, w2, w3 (all layers of one kind before the next
                      kind), the final norm, freqs_cos and freqs_sin (max_seq_len x head_dim/2
                      each), then output -- only when the header's vocab_size is negative;
                      a positive vocab_size means output is the token embedding (tied).

The header gives hidden_dim explicitly (172 for stories260K), which overrides Meta's
hidden-size rule. llama2.c pairs RoPE dimensions like Meta, so no permutation is needed.
Not handled: the version 1 and 2 exports (magic "ak42"), quantised (int8) exports.

Chapter: decoder.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.rope import precompute_freqs
from llama_from_scratch.model.transformer import Transformer

HEADER = struct.Struct("<7i")  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len
MAGIC_V1 = 0x616B3432  # "ak42": llama2.c's newer export versions start with this


def header_args(header: tuple[int, ...]) -> ModelArgs:
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len = header
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                     vocab_size=abs(vocab_size), hidden_dim=hidden_dim, max_seq_len=max_seq_len,
                     tie_embeddings=vocab_size > 0, norm_eps=1e-5, rope_theta=10000.0)


def tensor_shapes(args: ModelArgs) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor in the file, in file order (freqs_* are not model weights)."""
    L, dim, hd = args.n_layers, args.dim, args.head_dim
    per_layer = [
        ("attention_norm", (dim,)),
        ("attention.wq", (args.n_heads * hd, dim)),
        ("attention.wk", (args.kv_heads * hd, dim)),
        ("attention.wv", (args.kv_heads * hd, dim)),
        ("attention.wo", (dim, args.n_heads * hd)),
        ("ffn_norm", (dim,)),
        ("feed_forward.w1", (args.ffn_hidden_dim, dim)),
        ("feed_forward.w2", (dim, args.ffn_hidden_dim)),
        ("feed_forward.w3", (args.ffn_hidden_dim, dim)),
    ]
    shapes = [("tok_embeddings.weight", (args.vocab_size, dim))]
    for name, shape in per_layer:  # one kind for all layers, then the next kind
        shapes += [(f"layers.{i}.{name}.weight", shape) for i in range(L)]
    shapes += [("norm.weight", (dim,)), ("freqs_cos", (args.max_seq_len, hd // 2)),
               ("freqs_sin", (args.max_seq_len, hd // 2))]
    if not args.tie_embeddings:
        shapes.append(("output.weight", (args.vocab_size, dim)))
    return shapes


def expected_bytes(args: ModelArgs) -> int:
    return HEADER.size + 4 * sum(torch.Size(shape).numel() for _, shape in tensor_shapes(args))


def read_header(path: str | Path) -> tuple[int, ...]:
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise CheckpointError(f"{path}: {len(raw)} bytes, too short for llama2.c's 28-byte header")
    if struct.unpack("<I", raw[:4])[0] == MAGIC_V1:
        raise CheckpointError(f"{path} is a llama2.c version 1/2 export (magic 'ak42'); only the legacy "
                              "version 0 export is handled: export with `python export.py --version 0`")
    return HEADER.unpack(raw)


def _describe(args: ModelArgs) -> str:
    return (f"dim={args.dim}, hidden_dim={args.ffn_hidden_dim}, n_layers={args.n_layers}, "
            f"n_heads={args.n_heads}, n_kv_heads={args.kv_heads}, vocab_size={args.vocab_size}, "
            f"max_seq_len={args.max_seq_len}, tied output={args.tie_embeddings}")


def load_bin(path: str | Path, expected: ModelArgs | None = None) -> Transformer:
    """A `Transformer` (float32, eval mode) from a legacy llama2.c `.bin` file.

    With `expected`, the header must describe that architecture. Raises `CheckpointError`
    naming both the header and the config (or the file size) when they disagree.
    """
    path = Path(path)
    header = read_header(path)
    try:
        args = header_args(header)
    except ValueError as err:
        raise CheckpointError(f"{path}: header {header} is not a valid llama2.c model: {err}") from err
    if expected is not None:
        wanted = header_args((expected.dim, expected.ffn_hidden_dim, expected.n_layers, expected.n_heads,
                              expected.kv_heads, expected.vocab_size * (1 if expected.tie_embeddings else -1),
                              expected.max_seq_len))
        if wanted != args:
            raise CheckpointError(f"{path}: the header says {_describe(args)}, but the expected config "
                                  f"says {_describe(wanted)}")
    size, want = path.stat().st_size, expected_bytes(args)
    if size != want:
        raise CheckpointError(f"{path} has {size:,} bytes, but its header ({_describe(args)}) implies "
                              f"{want:,} bytes: the file is truncated or not a legacy llama2.c export")
    data = torch.frombuffer(bytearray(path.read_bytes()[HEADER.size:]), dtype=torch.float32)  # (n_floats,)
    state_dict, offset = {}, 0
    for name, shape in tensor_shapes(args):
        n = torch.Size(shape).numel()
        state_dict[name] = data[offset:offset + n].view(shape)
        offset += n
    del state_dict["freqs_cos"], state_dict["freqs_sin"]  # recomputed by the model from the config
    if args.tie_embeddings:
        state_dict["output.weight"] = state_dict["tok_embeddings.weight"]
    model = Transformer(args)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def save_bin(model: Transformer, path: str | Path) -> None:
    """Write `model` as a legacy llama2.c `.bin` (the inverse of `load_bin`), float32."""
    args = model.args
    vocab = args.vocab_size if args.tie_embeddings else -args.vocab_size
    cos, sin = precompute_freqs(args.head_dim, args.max_seq_len, args.rope_theta)
    tensors = {**model.state_dict(), "freqs_cos": cos, "freqs_sin": sin}
    with open(path, "wb") as f:
        f.write(HEADER.pack(args.dim, args.ffn_hidden_dim, args.n_layers, args.n_heads, args.kv_heads,
                            vocab, args.max_seq_len))
        for name, _ in tensor_shapes(args):
            f.write(tensors[name].detach().float().contiguous().numpy().tobytes())


def load_pt(path: str | Path) -> Transformer:
    """A `Transformer` from a llama2.c training checkpoint (`ckpt.pt` written by its train.py).

    Loaded with `torch.load(weights_only=True)`: no code in the file runs. The file holds
    "model" (a state dict with Meta's names) and "model_args" (dim, n_layers, n_heads,
    n_kv_heads, vocab_size, multiple_of, max_seq_len, ...). hidden_dim is read from w1's shape.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path}: not a llama2.c training checkpoint (expected the keys "
                              "'model' and 'model_args' written by llama2.c's train.py)")
    # torch.compile'd models save their weights under "_orig_mod."
    sd = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    m = ckpt["model_args"]
    w1 = sd.get("layers.0.feed_forward.w1.weight")
    tied = "output.weight" not in sd or sd["output.weight"].data_ptr() == sd["tok_embeddings.weight"].data_ptr()
    args = ModelArgs(dim=m["dim"], n_layers=m["n_layers"], n_heads=m["n_heads"],
                     n_kv_heads=m.get("n_kv_heads"), vocab_size=m["vocab_size"],
                     multiple_of=m.get("multiple_of", 256), norm_eps=m.get("norm_eps", 1e-5),
                     max_seq_len=m["max_seq_len"], tie_embeddings=tied,
                     hidden_dim=m.get("hidden_dim") or (w1.shape[0] if w1 is not None else None))
    sd = {k: v for k, v in sd.items() if k not in ("freqs_cos", "freqs_sin")}
    if tied:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model = Transformer(args)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match its model_args ({_describe(args)}): {err}") from err
    return model.float().eval()
