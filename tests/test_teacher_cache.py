"""The offline teacher cache: building it (full logits, top-k, storage dtypes, shards), its record and the trainer's
refusal of a cache that does not match, training from it without a teacher, and the `cache-teacher` command."""

import copy
from dataclasses import dataclass

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB_SIZE, TinyCNN, image_dataset, lm_dataset, make_args, text_dataset, tiny_bert, tiny_gpt2

from hf_distill import DistillationTrainer, TeacherCacheMismatchError, cache_teacher_outputs, check_teacher_cache
from hf_distill.cli import main as cli_main
from hf_distill.losses import topk_soft_target_loss
from hf_distill.teachers import (
    CachedTeacherCollator,
    CropFlip,
    ReplayAugmentationCollator,
    cache_augmented_teacher_outputs,
    cache_size,
    merge_cache_shards,
    read_cache_record,
)
from hf_distill.teachers.cache_columns import as_run
from hf_distill.teachers.cache_record import check_cache_for_training
from hf_distill.teachers.cache_rows import CachedTeacherRows, cached_teacher_rows

TOLERANCE = 1e-6


def _train(tmp_path, name, student, dataset, teacher=None, **overrides):
    args = make_args(tmp_path / name, **{"max_steps": 2, **overrides})
    trainer = DistillationTrainer(student, args, train_dataset=dataset, teacher_model=teacher)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return losses, student


def _assert_same_training(first, second, tolerance=TOLERANCE):
    (losses_a, model_a), (losses_b, model_b) = first, second
    assert losses_a == pytest.approx(losses_b, abs=tolerance)
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=tolerance, rtol=0, msg=name)


@pytest.fixture(scope="module")
def bert_cache():
    return cache_teacher_outputs(tiny_bert(seed=1, layers=3), text_dataset(), batch_size=5)


def test_full_logits_cache_trains_as_the_online_teacher(tmp_path, bert_cache):
    assert bert_cache.column_names == ["input_ids", "labels", "teacher_logits", "teacher_input_hash"]
    online = _train(tmp_path, "online", tiny_bert(seed=0), text_dataset(), tiny_bert(seed=1, layers=3))
    cached = _train(tmp_path, "cached", tiny_bert(seed=0), bert_cache)  # no teacher loaded
    _assert_same_training(online, cached)


def test_the_record_survives_save_and_load_and_names_what_was_cached(tmp_path, bert_cache):
    bert_cache.save_to_disk(str(tmp_path / "cache"))
    loaded = datasets.load_from_disk(str(tmp_path / "cache"))
    record = read_cache_record(loaded)
    assert record == read_cache_record(bert_cache)
    assert (record.top_k, record.dtype, record.num_classes, record.per_position) == (None, "float32", 3, False)
    assert record.input_columns == ["input_ids"] and record.dataset_fingerprint == text_dataset()._fingerprint
    assert record.teacher_class.endswith("BertForSequenceClassification")
    assert check_teacher_cache(loaded.shuffle(seed=0), tiny_bert(seed=1, layers=3), text_dataset()) == record
    same_teacher = DistillationTrainer(
        tiny_bert(), make_args(tmp_path / "out"), train_dataset=loaded, teacher_model=tiny_bert(seed=1, layers=3)
    )
    assert len(same_teacher.get_train_dataloader()) == 4  # checked before the first batch, and accepted


def _retokenized(cache):
    return cache.map(lambda row: {"input_ids": [(i + 1) % VOCAB_SIZE for i in row["input_ids"]]})


def _joined_to_other_rows(cache):
    other = text_dataset(seed=5)
    return datasets.concatenate_datasets(
        [other, cache.select_columns(["teacher_logits", "teacher_input_hash"])], axis=1
    )


@pytest.mark.parametrize(
    "change, check, part",
    [
        (lambda cache: cache, {"teacher": tiny_bert(seed=3, layers=3)}, "teacher weights"),
        (_retokenized, {}, "dataset: 32 of 32 rows"),
        (_joined_to_other_rows, {}, "dataset: 32 of 32 rows"),
        (lambda cache: cache, {"dataset": text_dataset(seed=5)}, "dataset: fingerprint"),
        (lambda cache: cache, {"top_k": 2}, "top_k: 2 requested"),
        (lambda cache: cache, {"data_collator": CachedTeacherCollator(None)}, "preprocessing"),
        (lambda cache: cache.remove_columns("input_ids"), {}, "preprocessing: the input columns ['input_ids']"),
        (lambda cache: cache.remove_columns("teacher_logits"), {}, "top_k: the cache (top_k=None) lacks"),
    ],
)
def test_a_cache_that_does_not_match_is_refused_naming_the_part(bert_cache, change, check, part):
    with pytest.raises(TeacherCacheMismatchError, match="does not match") as error:
        check_teacher_cache(change(bert_cache), **check)
    assert part in str(error.value)


def test_the_trainer_refuses_a_mismatched_cache_before_training(tmp_path, bert_cache):
    args = make_args(tmp_path / "out")
    trainer = DistillationTrainer(tiny_bert(), args, train_dataset=_retokenized(bert_cache))
    with pytest.raises(TeacherCacheMismatchError, match="rows' input columns"):
        trainer.train()
    other_teacher = DistillationTrainer(tiny_bert(), args, train_dataset=bert_cache, teacher_model=tiny_bert(seed=4))
    with pytest.raises(TeacherCacheMismatchError, match="teacher weights"):
        other_teacher.train()
    with pytest.raises(TeacherCacheMismatchError, match="no teacher-cache record"):
        check_teacher_cache(text_dataset())
    with pytest.raises(TeacherCacheMismatchError, match="no record in info.description"):
        check_cache_for_training(bert_cache.to_iterable_dataset(), None, args)


@pytest.fixture(scope="module")
def lm_caches():
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset()
    return {k: cache_teacher_outputs(teacher, dataset, top_k=k, batch_size=4) for k in (None, VOCAB_SIZE, 4)}


def test_top_k_with_k_equal_to_the_vocabulary_trains_as_full_logits(tmp_path, lm_caches):
    assert read_cache_record(lm_caches[VOCAB_SIZE]).per_position
    full = _train(tmp_path, "full", tiny_gpt2(seed=0), lm_caches[None])
    online = _train(tmp_path, "online", tiny_gpt2(seed=0), lm_dataset(), tiny_gpt2(seed=1))
    topk = _train(tmp_path, "topk", tiny_gpt2(seed=0), lm_caches[VOCAB_SIZE])
    _assert_same_training(online, full)
    _assert_same_training(full, topk, tolerance=1e-5)  # log-softmax then scatter: float32 rounding of the logits


@pytest.mark.parametrize(("tail", "chunk_size"), [("bucket", 0), ("renormalize", 0), ("bucket", 3)])
def test_a_top_k_cache_gives_the_top_k_loss_and_trains(tmp_path, lm_caches, tail, chunk_size):
    fields = {"alpha": 1.0, "topk_tail": tail, "max_steps": 2, "loss_chunk_size": chunk_size}  # 3: chunks of 3 tokens
    cache, args = lm_caches[4], make_args(tmp_path / "out", **fields)
    student = tiny_gpt2(seed=0)
    trainer = DistillationTrainer(student, args, train_dataset=cache)
    batch = trainer.data_collator([cache[i] for i in range(3)])
    assert batch["teacher_topk_values"].shape == (3, 10, 4)
    with torch.no_grad():
        loss = trainer.compute_loss(student, dict(batch))
        logits, labels = student(input_ids=batch["input_ids"]).logits[:, :-1], batch["labels"][:, 1:]
    values, indices = batch["teacher_topk_values"][:, :-1], batch["teacher_topk_indices"][:, :-1]
    expected = topk_soft_target_loss(logits, values, indices, 4.0, mask=labels != -100, tail=tail)
    torch.testing.assert_close(loss, expected, atol=TOLERANCE, rtol=0)
    if tail == "renormalize":
        return
    before = copy.deepcopy(student.state_dict())
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == args.max_steps and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[name], value) for name, value in student.state_dict().items())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_top_k_cache_with_labels_gives_the_same_gradients_in_chunks(
    tmp_path, lm_caches, label_smoothing, monkeypatch
):
    # Chunked, with both terms weighted, the soft and hard losses are computed together by one kernel.
    import hf_distill.terms.logits as term_module

    together = []
    joint = term_module.chunked_topk_soft_and_hard_losses
    monkeypatch.setattr(
        term_module, "chunked_topk_soft_and_hard_losses", lambda *a, **k: together.append(1) or joint(*a, **k)
    )
    runs = []
    for chunk_size in (0, 3):
        fields = {"alpha": 0.3, "label_smoothing_factor": label_smoothing, "loss_chunk_size": chunk_size}
        student = tiny_gpt2(seed=0)
        trainer = DistillationTrainer(student, make_args(tmp_path / f"out{chunk_size}", **fields))
        batch = trainer.data_collator([lm_caches[4][i] for i in range(3)])
        loss = trainer.compute_loss(student, dict(batch))
        loss.backward()
        runs.append((loss.detach(), [p.grad for p in student.parameters() if p.grad is not None]))
    assert len(together) == 1  # the chunked run only
    (loss, gradients), (chunked_loss, chunked_gradients) = runs
    torch.testing.assert_close(chunked_loss, loss, rtol=1e-6, atol=1e-6)
    assert len(gradients) == len(chunked_gradients) > 0
    for expected, gradient in zip(gradients, chunked_gradients, strict=True):
        torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-6)


@dataclass
class TeacherArgmaxTerm:
    """A user's term that reads `batch.teacher_logits`: the student's cross-entropy on the teacher's top-1."""

    weight: float = 0.1
    name: str = "teacher_argmax"

    def __call__(self, batch):
        from hf_distill.terms import TermLoss

        targets = batch.teacher_logits.argmax(-1)
        return TermLoss(F.cross_entropy(batch.student_logits.transpose(1, -1), targets, reduction="none"), None)


def test_a_top_k_batch_forms_no_dense_teacher_logits_unless_a_term_reads_them(tmp_path, lm_caches, monkeypatch):
    """The soft and hard terms, the teacher check and the evaluation counts take the cached support: no (B, L, V)
    tensor of -inf outside the top k is written, unless a term reads `batch.teacher_logits`."""
    from hf_distill.terms import TopKTeacherOutputs

    formed = []
    dense = TopKTeacherOutputs.logits
    monkeypatch.setattr(TopKTeacherOutputs, "logits", lambda self, n: formed.append(n) or dense(self, n))
    cache = lm_caches[4]
    for chunk_size in (0, 3):
        fields = {"alpha": 0.5, "loss_chunk_size": chunk_size, "max_steps": 1}
        args = make_args(tmp_path / f"out{chunk_size}", **fields)
        trainer = DistillationTrainer(tiny_gpt2(seed=0), args, train_dataset=cache, eval_dataset=cache)
        trainer.train()
        metrics = trainer.evaluate()
        assert 0 < metrics["eval_teacher_agreement"] < 1 and 0 <= metrics["eval_teacher_accuracy"] <= 1
    assert formed == []
    extra = TeacherArgmaxTerm()
    trainer = DistillationTrainer(tiny_gpt2(seed=0), args, train_dataset=cache, extra_loss_terms=[extra])
    batch = trainer.data_collator([cache[i] for i in range(3)])
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    assert formed == [VOCAB_SIZE]


def test_a_broken_top_k_cache_is_refused_at_its_first_batch(tmp_path, lm_caches):
    cache = lm_caches[4]
    trainer = DistillationTrainer(tiny_gpt2(seed=0), make_args(tmp_path / "out"), train_dataset=cache)
    batch = trainer.data_collator([cache[i] for i in range(3)])
    broken = dict(batch, teacher_topk_values=batch["teacher_topk_values"].clone())
    broken["teacher_topk_values"][1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN, \+inf or -inf for every class at 1 of .* \(1 with NaN\)"):
        trainer.compute_loss(trainer.model, broken)
    shorter = dict(batch, **{key: batch[key][:, :-1] for key in ("teacher_topk_values", "teacher_topk_indices")})
    with pytest.raises(ValueError, match=r"cached top-k of shape \(3, 9, 4\) does not match student logits"):
        trainer.compute_loss(trainer.model, shorter)
    beyond = dict(batch, teacher_topk_indices=batch["teacher_topk_indices"] + VOCAB_SIZE)
    with pytest.raises(ValueError, match="another vocabulary"):
        trainer.compute_loss(trainer.model, beyond)


def test_a_top_k_cache_needs_the_soft_target_method(tmp_path, lm_caches):
    args = make_args(tmp_path / "out", distillation_method="dkd")
    with pytest.raises(ValueError, match="top-k teacher cache"):
        DistillationTrainer(tiny_gpt2(), args, train_dataset=lm_caches[4]).train()


@dataclass
class PadCollator:
    """Pads `input_ids` to the longest row on `side`, with an attention mask (as a tokenizer's padding would) and
    position ids counted over the row's own tokens, so that a causal LM's outputs do not depend on the padding."""

    side: str = "right"

    def __call__(self, features):
        length = max(len(f["input_ids"]) for f in features)
        ids, mask = torch.zeros(len(features), length, dtype=torch.long), torch.zeros(len(features), length)
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            where = slice(0, n) if self.side == "right" else slice(length - n, length)
            ids[i, where], mask[i, where] = torch.tensor(feature["input_ids"]), 1
        return {
            "input_ids": ids,
            "attention_mask": mask.long(),
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0).long(),
        }


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("read", ["datasets", "views"])  # rows as `datasets` formats them, or CachedTeacherRows
def test_token_level_caches_keep_each_rows_own_positions_and_the_storage_dtype(side, dtype, read):
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11]]})
    teacher = tiny_gpt2(seed=1)
    cache = cache_teacher_outputs(teacher, rows, batch_size=3, dtype=dtype, data_collator=PadCollator(side))
    assert [len(row) for row in cache["teacher_logits"]] == [3, 5, 1, 2]
    assert cache.features["teacher_logits"].feature.feature.dtype == {"bfloat16": "int16"}.get(dtype, dtype)
    chosen = [1, 2, 3]
    features = [cache[i] for i in chosen] if read == "datasets" else cached_teacher_rows(cache).__getitems__(chosen)
    # Replayed in batches of another composition (and padding side), each row's outputs land on its own tokens.
    batch = CachedTeacherCollator(PadCollator("left" if side == "right" else "right"))(features)
    with torch.no_grad():
        live = teacher(**{key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}).logits
    attended = batch["attention_mask"].bool()
    expected = live[attended].to(getattr(torch, dtype)).float()
    torch.testing.assert_close(batch["teacher_logits"][attended], expected, atol=1e-5, rtol=0)
    assert batch["teacher_logits"].dtype == torch.float32 and "teacher_input_hash" not in batch


def test_cache_rows_are_views_of_the_stored_buffers(lm_caches):
    # The trainer's loaders read a cache's teacher columns as NumPy views of its Arrow buffers (no Python lists, no
    # copy), in any order and through an index mapping, with the same values as `datasets` gives; a column of
    # another type (a user's lists of floats) stays with `datasets`.
    for cache in (lm_caches[None], lm_caches[4], cache_teacher_outputs(TinyCNN(seed=1), image_dataset(n=6))):
        shuffled = cache.shuffle(seed=0).select([4, 0, 3])
        rows = cached_teacher_rows(shuffled)
        assert isinstance(rows, CachedTeacherRows) and len(rows) == 3
        for index, row in zip([2, 0], rows.__getitems__([2, 0]), strict=True):
            expected = shuffled.with_format("numpy")[index]
            assert row.keys() == expected.keys()
            for key in rows.keys:
                assert isinstance(row[key], np.ndarray) and not row[key].flags.owndata and not row[key].flags.writeable
                np.testing.assert_array_equal(row[key], expected[key])
            formatted = shuffled[index]  # the other columns in the dataset's own format
            for key in row.keys() - set(rows.keys):
                assert type(row[key]) is type(formatted[key])
                np.testing.assert_array_equal(np.asarray(row[key]), np.asarray(formatted[key]))
    own = text_dataset().add_column("teacher_logits", [[0.5, -0.5]] * len(text_dataset()))
    assert cached_teacher_rows(own) is own


def test_the_size_of_a_top_k_cache_per_token():
    cache = cache_teacher_outputs(tiny_gpt2(seed=1), lm_dataset(n=4), top_k=8, dtype="float16")
    size = cache_size(cache)
    assert size["tokens"] == 40 and size["examples"] == 4
    # float16 values and int32 ids per token, plus under one byte per token of per-example list offsets.
    assert 8 * (2 + 4) < size["bytes_per_token"] < 8 * (2 + 4) + 1


def test_the_fingerprint_of_a_cache_follows_what_made_it():
    # `datasets` keys its caches (of `map`, ...) on fingerprints: the cache's comes from the dataset's, the teacher's
    # weights and the settings (not from hashing the stored outputs, which takes longer than computing them).
    rows, teacher = lm_dataset(n=4), tiny_gpt2(seed=1)
    first, again = (cache_teacher_outputs(teacher, rows, top_k=4) for _ in range(2))
    assert first._fingerprint == again._fingerprint
    others = [
        cache_teacher_outputs(tiny_gpt2(seed=2), rows, top_k=4),
        cache_teacher_outputs(teacher, rows, top_k=3),
        cache_teacher_outputs(teacher, rows, top_k=4, dtype="float16"),
        cache_teacher_outputs(teacher, rows.select(range(3)), top_k=4),
    ]
    assert len({first._fingerprint, *(other._fingerprint for other in others)}) == 5


def test_positions_in_one_run_index_as_a_view():
    assert as_run(torch.tensor([2, 3, 4])) == slice(2, 5)
    holes = torch.tensor([0, 2, 3])
    assert as_run(holes) is holes and as_run(torch.tensor([], dtype=torch.long)).numel() == 0


def test_shards_computed_apart_and_merged_equal_one_pass(tmp_path):
    teacher, dataset = TinyCNN(seed=1), image_dataset(n=10)
    whole = cache_teacher_outputs(teacher, dataset, top_k=2, batch_size=4)
    for index in range(2):
        shard = cache_teacher_outputs(teacher, dataset.shard(2, index, contiguous=True), top_k=2, batch_size=3)
        shard.save_to_disk(str(tmp_path / f"{index:05d}"))
    merged = merge_cache_shards([tmp_path / "00000", tmp_path / "00001"])
    assert merged.format["type"] == whole.format["type"] == "torch"  # the format of the dataset given
    merged, whole = merged.with_format(None), whole.with_format(None)
    for column in ("teacher_topk_values", "teacher_topk_indices", "teacher_input_hash"):
        assert merged[column] == whole[column]


def test_a_dataset_with_an_on_the_fly_transform_is_refused():
    augmented = image_dataset().with_transform(lambda batch: batch)
    with pytest.raises(ValueError, match="on-the-fly transform.*other views than the teacher saw"):
        cache_teacher_outputs(TinyCNN(), augmented)


@pytest.mark.parametrize(
    "options, message",
    [({"top_k": 0}, "top_k must be"), ({"dtype": "int8"}, "dtype must be"), ({"top_k": 9}, "exceeds the teacher's")],
)
def test_bad_cache_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        cache_teacher_outputs(TinyCNN(), image_dataset(n=2), **options)


def test_the_cache_teacher_command(tmp_path, capsys):
    tiny_gpt2(seed=1).save_pretrained(tmp_path / "teacher")
    lm_dataset(n=6).save_to_disk(str(tmp_path / "data"))
    argv = ["cache-teacher", str(tmp_path / "teacher"), str(tmp_path / "data"), str(tmp_path / "cache")]
    assert cli_main([*argv, "--top_k", "8", "--dtype", "bfloat16", "--batch_size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Cached 6 examples (top-8, bfloat16)" in printed and "60 tokens" in printed and "bytes per token" in printed
    cache = datasets.load_from_disk(str(tmp_path / "cache"))
    record = check_teacher_cache(cache, tiny_gpt2(seed=1), top_k=8)
    assert (record.dtype, record.teacher_name_or_path) == ("bfloat16", str(tmp_path / "teacher"))
    assert cli_main(["cache-teacher", str(tmp_path / "missing"), str(tmp_path / "data"), str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_logits_of_a_top_k_batch_put_the_cached_classes_back():
    from hf_distill.terms import TopKTeacherOutputs

    logits = torch.randn(2, 5, 7)
    values, indices = F.log_softmax(logits, -1).topk(3, dim=-1)
    dense = TopKTeacherOutputs(values, indices).logits(7)
    assert torch.equal(dense.topk(3, dim=-1).indices, indices) and torch.isinf(dense).sum() == 2 * 5 * 4
    with pytest.raises(ValueError, match="another vocabulary"):
        TopKTeacherOutputs(values, indices).logits(2)


def test_augmented_cache_replays_the_view_the_teacher_saw(tmp_path):
    teacher, images, augmentation = TinyCNN(seed=1), image_dataset(n=4), CropFlip(size=8, padding=2)
    cache = cache_augmented_teacher_outputs(teacher, images, augmentation, draws=3, batch_size=5)
    assert len(cache) == 12 and len({tuple(p) for p in cache["augmentation_params"]}) > 3
    collator = ReplayAugmentationCollator(augmentation)
    batch = CachedTeacherCollator(collator)([cache[i] for i in range(12)])
    with torch.no_grad():
        torch.testing.assert_close(teacher(batch["pixel_values"]), batch["teacher_logits"], atol=TOLERANCE, rtol=0)
    top, left, flip = (int(v) for v in cache[4]["augmentation_params"])  # draw 1 of image 1, rebuilt by hand
    expected = F.pad(images[1]["pixel_values"], [2, 2, 2, 2])[:, top : top + 8, left : left + 8]
    assert torch.equal(batch["pixel_values"][4], expected.flip(-1) if flip else expected)
    assert "augmentation_params" not in batch and check_teacher_cache(cache, teacher).preprocessing.count("size") == 1
    args = make_args(tmp_path / "out", max_steps=2, per_device_train_batch_size=4)
    DistillationTrainer(TinyCNN(seed=0), args, collator, cache).train()  # the student gets the replayed views


def test_the_top_k_term_on_logits_cut_to_a_shared_vocabulary():
    """Logits compared over the first `vocab_size` ids (`compared_vocab_size`): cached ids inside it are used as they
    are; a position whose top k reaches beyond it takes the top k of the teacher's remaining logits."""
    from hf_distill.losses import teacher_topk
    from hf_distill.terms import SoftTargetTerm, TopKTeacherOutputs
    from hf_distill.terms.combine import align_batch
    from hf_distill.terms.topk import teacher_top1

    generator = torch.Generator().manual_seed(0)
    student, teacher = (torch.randn(2, 5, 12, generator=generator) * 3 for _ in range(2))
    teacher[0, :, 10:] = 30.0  # the first example's top 2 are ids 10 and 11, beyond the shared 10
    values, indices = teacher_topk(teacher, k=3)
    topk = TopKTeacherOutputs(values, indices)
    term = SoftTargetTerm(1.0, 2.0)
    for vocab_size in (12, 10):
        batch = align_batch({}, student, None, None, None, topk, vocab_size=vocab_size)  # as the trainer gives it
        loss = term(batch).per_position
        torch.testing.assert_close(batch.teacher_logits, topk.logits(12)[..., :vocab_size])  # formed when read
        assert torch.equal(teacher_top1(batch), batch.teacher_logits.argmax(-1))
        if vocab_size == 12:
            expected = topk_soft_target_loss(student, values, indices, 2.0, reduction="none")
        else:
            kept = topk.logits(12)[..., :10].topk(3, dim=-1)  # ids 10 and 11 dropped: -inf in the top 3
            expected = topk_soft_target_loss(student[..., :10], *kept, 2.0, reduction="none")
        torch.testing.assert_close(loss, expected)
