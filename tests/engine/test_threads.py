"""`--threads N` on eval/predict: the same answers with one and two threads, bad values refused in one line."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from beexformer.cli.main import main
from beexformer.engine import threads
from beexformer.engine.export import export_model
from beexformer.engine.runtime import PackedModel
from conftest import make_model


@pytest.fixture
def packed_path(tmp_path, tiny_tokenizer_dir):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(act_bits=4, ffn="ffn", position="learned", vocab_size=encoder.vocab_size)
    info = {"task": "sst2", "label_list": ["0", "1"], "max_len": 48}
    return export_model(model, tok_dir, tmp_path / "m.beex", task_info=info)


def _predict(path, threads_n: int, texts: list[str], capsys) -> list[str]:
    before = numba.get_num_threads()
    try:
        assert main(["predict", str(path), *texts, "--threads", str(threads_n), "--exit-rule", "none"]) == 0
        assert numba.get_num_threads() == min(threads_n, numba.config.NUMBA_NUM_THREADS)
    finally:
        numba.set_num_threads(before)
    return capsys.readouterr().out.splitlines()


def test_two_threads_give_the_same_predictions(packed_path, capsys):
    texts = [f"a fine film number {i} , not dull at all" for i in range(60)]  # > 256 token rows: parallel kernels
    one = _predict(packed_path, 1, texts, capsys)
    two = _predict(packed_path, 2, texts, capsys)
    assert len(one) == len(texts) and one == two


def test_parallel_kernels_equal_serial_on_a_large_batch(packed_path):
    """The runtime's choice of flavour (threads.kernels_for) changes nothing but speed."""
    packed = PackedModel.load(packed_path)
    ids, segs = packed.encode([f"the best movie of the year {i}" for i in range(50)], None)
    assert sum(map(len, ids)) >= threads.MIN_PARALLEL_ROWS
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = packed.run(ids, segs).exit_logits
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        parallel = packed.run(ids, segs).exit_logits
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(serial, parallel)


def test_zero_threads_is_a_one_line_error(packed_path, capsys):
    assert main(["predict", str(packed_path), "a text", "--threads", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--threads 0" in err and len(err.splitlines()) == 1
