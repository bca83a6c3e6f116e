"""Distillation of a causal language model into a smaller one, on prompt / completion or chat data.

The student is built from the teacher's layers (``student_from_teacher``, every other layer unless
``--student_layers``) or given with ``--student_model_name_or_path`` (it must share the teacher's tokenizer; logits
padded differently beyond it are compared over the tokenizer's ids). Prompt tokens are excluded from every loss
(labels -100). The soft loss is ``--distillation_loss forward_kl | reverse_kl | jsd`` (TRL's GKD ``beta`` 0, 1, or
``--jsd_beta``), the hard loss on the completions has weight ``1 - alpha``, and ``--lmbda`` / ``--seq_kd`` turn on
on-policy distillation (GKD) and sequence-level KD.

Launch:

    # one GPU: a chat dataset (a "messages" column), Qwen2.5-1.5B-Instruct -> a 14-layer student of its layers
    python recipes/causal_lm.py --teacher_model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \\
        --student_layers 0 2 4 6 8 10 12 14 16 18 20 22 24 27 --dataset_name HuggingFaceH4/ultrachat_200k \\
        --train_split train_sft --output_dir out/qwen_student --bf16 true --per_device_train_batch_size 8 \\
        --gradient_accumulation_steps 4 --learning_rate 2e-5 --num_train_epochs 1 --alpha 1.0 --temperature 1.0 \\
        --distillation_loss jsd --jsd_beta 0.5 --lmbda 0.5 --max_new_tokens 256 --max_length 1024

    # several GPUs (DDP; each process generates its own on-policy completions); the 7B teacher has 152,064 logits and
    # the 0.5B student 151,936 for one 151,665-token tokenizer: compared over the tokenizer's ids
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/causal_lm.py \\
        --teacher_model_name_or_path Qwen/Qwen2.5-7B-Instruct \\
        --student_model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --train_file train.jsonl --output_dir out/qwen_0.5b \\
        --bf16 true --alpha 0.9 --lmbda 0.5

    # DeepSpeed ZeRO-3 (teacher and student sharded; the student's weights are gathered for generation)
    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml recipes/causal_lm.py \\
        --teacher_model_name_or_path Qwen/Qwen2.5-7B-Instruct \\
        --student_model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --train_file train.jsonl --output_dir out/qwen_1.5b \\
        --bf16 true --alpha 1.0 --lmbda 0.5

    # offline demo (no download): trains a small teacher on synthetic additions, then compares a student trained on
    # the data alone, an off-policy and an on-policy distilled student (same optimizer steps, 3 seeds); writes
    # report.json / report.md to out/causal_lm_demo
    python recipes/causal_lm.py --offline_demo

``--offline_demo`` only prepends the demo's arguments (``DEMO_ARGS``); any argument given after it overrides them.
"""

import sys

from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from hf_distill import DistillationTrainer, DistillationTrainingArguments, student_from_teacher
from hf_distill.recipes.args import end_distributed, parse_recipe_args
from hf_distill.recipes.causal_lm import CausalLMArguments, CompletionCollator, load_completion_data
from hf_distill.recipes.causal_lm_demo import DEMO_ARGS, DemoArguments, run_demo


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--offline_demo" in argv:
        argv = [*DEMO_ARGS, *argv]
    model_args, demo_args, training_args = parse_recipe_args(
        (CausalLMArguments, DemoArguments, DistillationTrainingArguments), argv
    )
    if model_args.offline_demo:
        return run_demo(demo_args, training_args)
    if model_args.teacher_model_name_or_path is None:
        raise ValueError("Give --teacher_model_name_or_path (or --offline_demo).")
    set_seed(training_args.seed)

    # ---- Models ----
    teacher_tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path)
    teacher = AutoModelForCausalLM.from_pretrained(
        model_args.teacher_model_name_or_path, **(training_args.teacher_model_init_kwargs or {})
    )
    if model_args.student_model_name_or_path is not None:
        student = AutoModelForCausalLM.from_pretrained(model_args.student_model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(model_args.student_model_name_or_path)
    else:
        student, tokenizer = student_from_teacher(teacher, layers=model_args.student_layers), teacher_tokenizer
    if tokenizer.pad_token_id is None:  # padding is masked out of every loss: any token will do
        tokenizer.pad_token = tokenizer.eos_token

    # ---- Dataset ----
    # Token ids of the student's tokenizer, which the vocabulary check proves the same as the teacher's.
    train_dataset, eval_dataset = load_completion_data(model_args, tokenizer)

    # ---- Training ----
    trainer = DistillationTrainer(
        student,
        training_args,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        teacher_processing_class=teacher_tokenizer,
        teacher_model=teacher,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    end_distributed()
    return metrics


if __name__ == "__main__":
    main()
