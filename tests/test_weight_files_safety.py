"""Weight and tokenizer files from an untrusted folder: names that lead outside it are refused before anything is
opened, and malformed or garbage files stop with a WeightFileError naming the file, never a traceback."""

import builtins
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from sana_jax._io import UnsafePathError, WeightFileError, read_safetensors, write_safetensors
from sana_jax.weights.io import read_state_dict, read_torch_checkpoint, write_state_dict

# -- shard names from an index ----------------------------------------------------------------------------------


def _sharded_folder(tmp_path):
    """model/ with four shards of one tensor each and its index; returns (folder, index path, tensors)."""
    folder = tmp_path / "pipe" / "model"
    folder.mkdir(parents=True)
    tensors = {f"w{i}": np.full((16,), i, np.float32) for i in range(4)}
    write_state_dict(folder, "m", tensors, max_shard_bytes=64)
    index = folder / "m.safetensors.index.json"
    assert index.exists() and len(json.loads(index.read_text())["weight_map"]) == 4
    return folder, index, tensors


def _point_entry(index, key, name):
    data = json.loads(index.read_text())
    data["weight_map"][key] = name
    index.write_text(json.dumps(data))


class _OpenRecorder:
    """Records every path handed to open / os.open / os.stat (np.memmap and os.path.* go through these)."""

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        for owner, name in ((builtins, "open"), (os, "open"), (os, "stat")):
            original = getattr(owner, name)

            def recorder(path, *args, _original=original, **kwargs):
                if isinstance(path, (str, bytes, os.PathLike)):
                    self.paths.append(os.path.normpath(os.fsdecode(path)))
                return _original(path, *args, **kwargs)

            monkeypatch.setattr(owner, name, recorder)


def test_sharded_folder_written_here_loads(tmp_path):
    folder, _, tensors = _sharded_folder(tmp_path)
    out = read_state_dict(folder, "m")
    assert sorted(out) == sorted(tensors) and all(np.array_equal(out[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_shard_named_outside_its_folder_is_refused_not_loaded(tmp_path, monkeypatch, where):
    folder, index, tensors = _sharded_folder(tmp_path)
    # A real, valid shard outside the folder, holding exactly the tensor the index maps there.
    outside = tmp_path / "pipe" / "x.safetensors"
    write_safetensors(outside, {"w0": np.full((16,), 7, np.float32)})
    entry = "../x.safetensors" if where == "parent" else str(outside)
    _point_entry(index, "w0", entry)
    opened = _OpenRecorder(monkeypatch)
    with pytest.raises(UnsafePathError) as info:
        read_state_dict(folder, "m")
    assert str(index) in str(info.value) and repr(entry) in str(info.value)
    assert str(outside) not in opened.paths


def test_index_naming_etc_passwd_never_opens_it(tmp_path, monkeypatch):
    if not os.path.isfile("/etc/passwd"):
        pytest.skip("needs /etc/passwd")
    folder, index, _ = _sharded_folder(tmp_path)
    entry = os.path.relpath("/etc/passwd", folder)  # ../../…/etc/passwd, as many .. as the folder is deep
    assert entry.startswith("../../../") and os.path.normpath(os.path.join(folder, entry)) == "/etc/passwd"
    _point_entry(index, "w1", entry)
    opened = _OpenRecorder(monkeypatch)
    with pytest.raises(UnsafePathError, match="leads outside") as info:
        read_state_dict(folder, "m")
    assert str(index) in str(info.value) and repr(entry) in str(info.value)
    assert "/etc/passwd" not in opened.paths


def test_symlinked_shards_inside_the_folder_load_like_the_hf_cache(tmp_path):
    """The Hugging Face cache lays each snapshot file out as a symlink to ../../blobs/<hash>: that is allowed."""
    folder, index, tensors = _sharded_folder(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in os.listdir(folder):
        os.replace(folder / name, blobs / name)
        os.symlink(os.path.relpath(blobs / name, folder), folder / name)
    out = read_state_dict(folder, "m")
    assert all(np.array_equal(out[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("index_data, expected", [
    ([], "JSON object"),
    ({"metadata": {}}, "'weight_map'"),
    ({"weight_map": ["m-00001-of-00004.safetensors"]}, "weight_map.*object"),
    ({"weight_map": {"w0": 5}}, r"'w0'.*5"),
    ({"weight_map": {"w0": None}}, r"'w0'.*None"),
], ids=["list", "no-weight-map", "weight-map-list", "int-file-name", "null-file-name"])
def test_index_whose_weight_map_is_not_names_to_files_is_named(tmp_path, index_data, expected):
    folder, index, _ = _sharded_folder(tmp_path)
    index.write_text(json.dumps(index_data))
    with pytest.raises(WeightFileError, match=expected) as info:
        read_state_dict(folder, "m")
    assert str(index) in str(info.value)


def test_index_that_is_not_utf8_json_is_named(tmp_path):
    folder, index, _ = _sharded_folder(tmp_path)
    index.write_bytes(b"\xff\xfe{not json")
    with pytest.raises(WeightFileError) as info:
        read_state_dict(folder, "m")
    assert str(index) in str(info.value)


# -- malformed safetensors headers ------------------------------------------------------------------------------

_DATA = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes


def _entry(**changes):
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not _DROP}


_DROP = object()

_BAD_HEADERS = {
    "header-is-a-list": ([1, 2], None),
    "header-is-a-number": (3, None),
    "entry-not-an-object": ({"t": [0, 16]}, "t"),
    "missing-dtype": ({"t": _entry(dtype=_DROP)}, "t"),
    "dtype-not-a-string": ({"t": _entry(dtype=7)}, "t"),
    "unknown-dtype": ({"t": _entry(dtype="F7")}, "t"),
    "missing-shape": ({"t": _entry(shape=_DROP)}, "t"),
    "shape-not-a-list": ({"t": _entry(shape=4)}, "t"),
    "shape-negative": ({"t": _entry(shape=[-4])}, "t"),
    "shape-float": ({"t": _entry(shape=[4.0])}, "t"),
    "shape-bool": ({"t": _entry(shape=[True, 4])}, "t"),
    "missing-data-offsets": ({"t": _entry(data_offsets=_DROP)}, "t"),
    "offsets-not-a-list": ({"t": _entry(data_offsets="0-16")}, "t"),
    "offsets-three-ints": ({"t": _entry(data_offsets=[0, 8, 16])}, "t"),
    "offsets-floats": ({"t": _entry(data_offsets=[0.0, 16.0])}, "t"),
    "offsets-nan": ({"t": _entry(data_offsets=[float("nan"), 16])}, "t"),
    "offsets-negative-start": ({"t": _entry(shape=[5], data_offsets=[-4, 16])}, "t"),
    "offsets-start-after-stop": ({"t": _entry(shape=[0], data_offsets=[16, 0])}, "t"),
    "offsets-past-the-data": ({"t": _entry(shape=[5], data_offsets=[0, 20])}, "t"),
    "bytes-do-not-fit-shape": ({"t": _entry(shape=[3])}, "t"),
    "shape-product-overflows-int64": ({"t": _entry(shape=[2**32, 2**32, 2**4])}, "t"),
    "metadata-not-an-object": ({"__metadata__": ["a"], "t": _entry()}, "__metadata__"),
    "metadata-value-not-a-string": ({"__metadata__": {"format": 1}, "t": _entry()}, "format"),
}


def _write_raw(path, header, data=_DATA):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_raw_writer_makes_files_the_reader_accepts(tmp_path):
    _write_raw(tmp_path / "ok.safetensors", {"__metadata__": {"format": "pt"}, "t": _entry()})
    np.testing.assert_array_equal(read_safetensors(tmp_path / "ok.safetensors")["t"], np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("name", list(_BAD_HEADERS))
def test_malformed_safetensors_header_is_a_weight_file_error_naming_file_and_key(tmp_path, name):
    header, key = _BAD_HEADERS[name]
    path = tmp_path / f"{name}.safetensors"
    _write_raw(path, header)
    with pytest.raises(WeightFileError) as info:
        read_safetensors(path)
    assert str(path) in str(info.value)
    if key is not None:
        assert repr(key) in str(info.value)


def test_safetensors_header_over_the_format_limit_is_refused_before_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge-header.safetensors"
    n = 100_000_001
    with open(path, "wb") as f:  # a sparse file: the header length fits the file, but is past the format's limit
        f.write(struct.pack("<Q", n))
        f.truncate(8 + n + 16)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("the header was parsed"))
    with pytest.raises(WeightFileError, match="100000000") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)


def test_safetensors_path_that_is_not_a_regular_file_is_named(tmp_path):
    import signal

    os.mkfifo(tmp_path / "fifo.safetensors")  # opening a FIFO for reading blocks until a writer comes
    (tmp_path / "dir.safetensors").mkdir()

    def hung(signum, frame):
        pytest.fail("read_safetensors blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        for name in ("fifo.safetensors", "dir.safetensors"):
            with pytest.raises(WeightFileError, match="not a regular file") as info:
                read_safetensors(tmp_path / name)
            assert str(tmp_path / name) in str(info.value)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_lazy_reads_equal_the_mapped_ones_and_a_file_cut_after_opening_is_named(tmp_path):
    """``lazy=True`` reads each tensor from the file when asked for, into a new 64-byte-aligned array (XLA:CPU then
    adopts it without a copy): the same values as the mapped read; a file truncated after its header was checked
    is an error naming it, not a short tensor."""
    import ml_dtypes

    path = tmp_path / "t.safetensors"
    tensors = {"a": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "b": np.arange(7, dtype=np.int8),
               "c": np.linspace(-2, 2, 10).astype(ml_dtypes.bfloat16), "e": np.zeros((0, 3), np.float32)}
    write_safetensors(path, tensors)
    mapped, lazy = read_safetensors(path), read_safetensors(path, lazy=True)
    assert set(lazy) == set(tensors)
    for key, value in tensors.items():
        assert (lazy[key].shape, lazy[key].dtype) == (value.shape, value.dtype)
        got = lazy[key].read()
        assert (got.size == 0 or got.ctypes.data % 64 == 0) and got.flags.writeable
        np.testing.assert_array_equal(got, mapped[key])
        np.testing.assert_array_equal(np.asarray(lazy[key]), value)
    del mapped
    lazy = read_safetensors(path, lazy=True)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 2)
    with pytest.raises(WeightFileError, match="truncated") as info:
        lazy["c"].read()
    assert str(path) in str(info.value)


def test_empty_safetensors_file_with_no_tensors_reads_as_empty(tmp_path):
    _write_raw(tmp_path / "empty.safetensors", {}, b"")
    assert read_safetensors(tmp_path / "empty.safetensors") == {}


# -- garbage .pth files -----------------------------------------------------------------------------------------


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _real_pth(legacy=False):
    buf = io.BytesIO()
    torch.save({"a": torch.arange(64.0), "b": torch.ones(3)}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


# Each case is what torch.load(weights_only=True) raised for it in torch 2.13 (the comment); all must become
# WeightFileError.
_GARBAGE = {
    "random-bytes": lambda: np.random.default_rng(0).bytes(1000),  # UnpicklingError (unsupported operand)
    "text": lambda: b"hello, this is not a checkpoint\n",  # KeyError: 101
    "pickle-pop-on-empty-stack": lambda: b"e",  # IndexError
    "pickle-bad-utf8-string": lambda: b"X\x01\x00\x00\x00\xff.",  # UnicodeDecodeError
    "pickle-int-no-magic": lambda: b"\x80\x02K\x05.",  # RuntimeError: invalid magic number
    "empty": lambda: b"",  # EOFError
    "zip-with-junk": lambda: _zip({"junk.txt": "junk" * 100}),  # RuntimeError: not in a subdirectory
    "zip-without-version": lambda: _zip({"archive/data.pkl": b"garbage"}),  # RuntimeError: no version record
    "truncated-zip-pth": lambda: _real_pth()[: len(_real_pth()) // 2],  # RuntimeError: no central directory
    "truncated-legacy-pth": lambda: _real_pth(legacy=True)[:-30],  # RuntimeError: unexpected EOF
    "json": lambda: b'{"a": [1, 2, 3]}',  # UnpicklingError
}


def test_the_real_pth_these_garbage_files_come_from_loads(tmp_path):
    for legacy in (False, True):
        (tmp_path / "real.pth").write_bytes(_real_pth(legacy))
        out = read_torch_checkpoint(tmp_path / "real.pth")
        np.testing.assert_array_equal(out["a"], np.arange(64.0, dtype=np.float32))


@pytest.mark.parametrize("name", list(_GARBAGE))
def test_garbage_pth_is_a_weight_file_error_naming_the_file(tmp_path, name):
    path = tmp_path / f"{name}.pth"
    path.write_bytes(_GARBAGE[name]())
    with pytest.raises(WeightFileError) as info:
        read_torch_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "refused" not in message  # unreadable, not "needs code"


# Every type torch.load raised in a fuzz of ~17,000 mutated and random files (zip and legacy format, torch 2.13).
_OBSERVED = [pickle.UnpicklingError("x"), RuntimeError("x"), EOFError(),
             UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"), IndexError("x"), KeyError(99),
             AssertionError("x"), TypeError("x"), ValueError("x"), AttributeError("x"), struct.error("x")]


@pytest.mark.parametrize("error", _OBSERVED, ids=lambda e: type(e).__name__)
def test_every_observed_torch_load_failure_becomes_a_weight_file_error(tmp_path, monkeypatch, error):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"anything")

    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(WeightFileError) as info:
        read_torch_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("error", [MemoryError(), KeyboardInterrupt(), OSError(5, "Input/output error")],
                         ids=lambda e: type(e).__name__)
def test_failures_that_are_not_about_the_file_content_pass_through(tmp_path, monkeypatch, error):
    path = tmp_path / "ok.pth"
    path.write_bytes(b"anything")

    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(type(error)):
        read_torch_checkpoint(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates quantized tensors and TypedStorage
@pytest.mark.parametrize("state, key", [
    (lambda: {"q": torch.zeros(3, dtype=torch.float8_e4m3fn)}, "q"),
    (lambda: {"s": torch.zeros(3, 3).to_sparse()}, "s"),
    (lambda: {"m": torch.empty(3, device="meta")}, "m"),
    (lambda: {"i": torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8)}, "i"),
    (lambda: {"d": {"inner": torch.zeros(1)}}, "d"),
    (lambda: {7: torch.zeros(1)}, 7),
], ids=["float8", "sparse", "meta", "quantized", "nested-dict", "int-key"])
def test_pth_entry_that_is_not_a_plain_tensor_is_named(tmp_path, state, key):
    path = tmp_path / "odd.pth"
    torch.save(state(), path)
    with pytest.raises(WeightFileError) as info:
        read_torch_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and repr(key) in str(info.value)


def test_pth_that_needs_code_still_says_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(WeightFileError, match="refused.*argparse.Namespace") as info:
        read_torch_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")


# -- tokenizer folders ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A Gemma-layout tokenizer saved by transformers (tokenizer.json + tokenizer_config.json)."""
    from sana_jax.testing.pipelines import gemma_style_tokenizer

    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    gemma_style_tokenizer().save_pretrained(folder)
    assert sorted(os.listdir(folder)) == ["tokenizer.json", "tokenizer_config.json"]
    return folder


def _copy_with_config(src, dst, *, drop=(), **config_changes):
    import shutil

    shutil.copytree(src, dst)
    for name in drop:
        os.remove(dst / name)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config.update(config_changes)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


def test_transformers_opens_fast_tokenizer_files_outside_the_folder(tmp_path, tokenizer_folder):
    """Why the check exists: transformers 5.23 takes `fast_tokenizer_files` entries as they are, so a folder with
    no vocabulary of its own loads one from elsewhere."""
    from transformers import AutoTokenizer

    outside = tmp_path / "elsewhere" / "tokenizer.5.0.json"
    outside.parent.mkdir()
    outside.write_bytes((tokenizer_folder / "tokenizer.json").read_bytes())
    folder = _copy_with_config(tokenizer_folder, tmp_path / "tokenizer", drop=["tokenizer.json"],
                               fast_tokenizer_files=[str(outside)])
    expected = AutoTokenizer.from_pretrained(tokenizer_folder)("a red circle").input_ids
    assert AutoTokenizer.from_pretrained(folder)("a red circle").input_ids == expected
    assert len(set(expected)) > 2  # real tokens, not all <unk>


def test_tokenizer_folder_saved_by_transformers_passes_the_check(tokenizer_folder):
    from sana_jax.pipeline.tokenizer_files import check_tokenizer_folder

    check_tokenizer_folder(tokenizer_folder)


def test_tokenizer_file_symlinked_inside_the_folder_passes_like_the_hf_cache(tmp_path, tokenizer_folder):
    from sana_jax.pipeline.tokenizer_files import check_tokenizer_folder

    folder = _copy_with_config(tokenizer_folder, tmp_path / "snapshot" / "tokenizer")
    blob = tmp_path / "blobs" / "abc123"
    blob.parent.mkdir()
    os.replace(folder / "tokenizer.json", blob)
    os.symlink(os.path.relpath(blob, folder), folder / "tokenizer.json")
    check_tokenizer_folder(folder)


@pytest.mark.parametrize("key, value", [
    ("fast_tokenizer_files", ["/abs/elsewhere/tokenizer.5.0.json"]),
    ("fast_tokenizer_files", ["tokenizer.json", "../../elsewhere/tokenizer.5.0.json"]),
    ("vocab_file", "/etc/passwd"),
    ("merges_file", "../merges.txt"),
    ("tokenizer_file", "sub/../../tokenizer.json"),
    ("sp_model_kwargs", {"model_file": "/abs/sp.model"}),
], ids=["fast-files-absolute", "fast-files-parent", "vocab-absolute", "merges-parent", "tokenizer-file-dotdot",
        "nested-model-file"])
def test_tokenizer_config_naming_a_file_outside_the_folder_is_refused(tmp_path, tokenizer_folder, key, value):
    from sana_jax.pipeline.tokenizer_files import check_tokenizer_folder

    folder = _copy_with_config(tokenizer_folder, tmp_path / "tokenizer", **{key: value})
    with pytest.raises(UnsafePathError) as info:
        check_tokenizer_folder(folder)
    message = str(info.value)
    assert str(folder / "tokenizer_config.json") in message
    assert repr(key if key != "sp_model_kwargs" else "model_file") in message


def test_tokenizer_config_naming_files_inside_the_folder_passes(tmp_path, tokenizer_folder):
    from sana_jax.pipeline.tokenizer_files import check_tokenizer_folder

    folder = _copy_with_config(tokenizer_folder, tmp_path / "tokenizer", tokenizer_file=None,
                               fast_tokenizer_files=["tokenizer.json"], vocab_file="./tokenizer.json")
    check_tokenizer_folder(folder)


def test_tokenizer_folder_without_a_vocabulary_is_refused(tmp_path, tokenizer_folder):
    """transformers loads such a folder as a tokenizer that maps every word to <unk>; that is an error here."""
    from transformers import AutoTokenizer

    from sana_jax.pipeline.tokenizer_files import check_tokenizer_folder

    folder = _copy_with_config(tokenizer_folder, tmp_path / "tokenizer", drop=["tokenizer.json"])
    assert set(AutoTokenizer.from_pretrained(folder)("a red circle", add_special_tokens=False).input_ids) == {3}
    with pytest.raises(WeightFileError, match="no vocabulary") as info:
        check_tokenizer_folder(folder)
    assert str(folder) in str(info.value)
