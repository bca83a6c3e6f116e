"""Distil a ResNet-50 teacher into a ResNet-18 student on CIFAR-10, and compare it with the same student from scratch.

The run trains (or loads) the teacher, then for each seed trains the student from scratch (cross-entropy only) and
distils it (Hinton loss, or --method) with the same budget in optimizer steps, and writes report.md / report.json
and PNG plots to --output_dir. With --labelled_fraction it also runs the transfer-set setting: only that share of
the training set keeps its labels; the student from scratch trains on it, the distilled student on it plus the rest
without labels. Each setting reports the per-seed difference (distilled − scratch), its mean and 95% t-interval,
and calls it significant only when the interval excludes 0. Any timm names work for --teacher_model /
--student_model; 32x32 inputs get CIFAR stems (--cifar_stem).

Offline demo on sklearn digits (no network; about 5 minutes on 2 CPU cores). It uses smaller
models than the CIFAR defaults (resnet18 teacher, timm's tiny test_resnet student), the whole training split (1,347
images; 135 labelled in the transfer set), 5 seeds and one CPU thread (--cpu_threads 1); see the config file:

    python recipes/cifar_resnet.py recipes/configs/digits_demo.json

    # the ablation (temperature, alpha, budget, fewer labelled images for teacher and students alike), on the same
    # data: its own config, as it takes longer than the demo
    python recipes/cifar_resnet.py recipes/configs/digits_ablation.json

    # another distillation method for the distilled students (kd, dkd, dist, kd+ls, fitnet, at, rkd, sp, or a sum
    # such as dkd+at; feature methods on ResNet-style models default to their authors' layers, or take module paths)
    python recipes/cifar_resnet.py recipes/configs/digits_demo.json --method dkd+at --output_dir out/digits_dkd_at
    python recipes/cifar_resnet.py recipes/configs/digits_demo.json --method fitnet \
        --student_modules layer3 --teacher_modules layer3 --output_dir out/digits_fitnet

    # born-again generations: each generation's distilled student teaches the next (same seed, data and budget)
    python recipes/cifar_resnet.py recipes/configs/digits_demo.json --generations 3 --output_dir out/digits_born_again

    # every method, 3 seeds, with step-time ratios: benchmarks/methods.py (see the README)

    # two CPU processes (gloo), same global batch of 32 as the single-process demo
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no recipes/cifar_resnet.py recipes/configs/digits_demo.json \
        --per_device_train_batch_size 16 --output_dir out/digits_ddp

CIFAR-10 with the settings of recipes/configs/cifar10_resnet.json (options after the file override it):

    python recipes/cifar_resnet.py recipes/configs/cifar10_resnet.json

CIFAR-10 from the Hub (uoft-cs/cifar10); the teacher is trained first, saved to <output_dir>/teacher with the
settings it was trained with, and reused by later runs with the same --output_dir and the same teacher settings (a run
with other ones, e.g. another --teacher_epochs, stops before training and lists what differs):

    python recipes/cifar_resnet.py --output_dir out/cifar_resnet \
        --num_train_epochs 30 --teacher_epochs 60 --learning_rate 1e-3 --per_device_train_batch_size 128 \
        --eval_strategy epoch --logging_strategy epoch --save_strategy no --alpha 0.9 --temperature 4

    accelerate launch recipes/cifar_resnet.py --output_dir out/cifar_resnet ...   # same options, several GPUs

With a trained teacher (a folder saved by this recipe, a trainer checkpoint of --teacher_model, or a Hub id):

    python recipes/cifar_resnet.py --teacher_name_or_path out/cifar_resnet/teacher --output_dir out/run2 ...

A local dataset: --dataset path/to/image_folder (class_name/*.png) or a save_to_disk folder.
"""

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation.comparison import Comparison, ComparisonArguments
from hf_distill.recipes.args import end_distributed, parse_recipe_args
from hf_distill.recipes.vision import (
    ImageDataArguments,
    ImageModelArguments,
    build_vision_setup,
)


def main(argv: list[str] | None = None) -> dict | None:
    model_args, data_args, comparison_args, training_args = parse_recipe_args(
        (ImageModelArguments, ImageDataArguments, ComparisonArguments, DistillationTrainingArguments), argv
    )

    # ---- Dataset and models: loaded and checked (names, paths, label counts) before any training ----
    setup = build_vision_setup(model_args, data_args, training_args, comparison_args)

    # ---- Training: teacher (unless given), then per seed a student from scratch and a distilled one ----
    report = Comparison(setup, training_args, comparison_args).run()
    end_distributed()
    return report


if __name__ == "__main__":
    main()
