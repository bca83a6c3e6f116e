"""Distil into a ViT student on CIFAR-10: from a ViT teacher (--pair vit) or across architectures (--pair cnn_vit).

--pair vit:     ViT-Small teacher → ViT-Tiny student (timm vit_small_patch16_224 → vit_tiny_patch16_224)
--pair cnn_vit: ResNet-50 teacher → DeiT-Tiny student (a CNN teacher, as in DeiT, Touvron et al. 2021)

On 32x32 images, --cifar_stem uses 4x4 patches (64 tokens) and a stride-1 ResNet stem. --teacher_model and
--student_model override the pair with any timm names; --student_model_kwargs '{"depth": 6}' shrinks a ViT.
Same comparison and report as recipes/cifar_resnet.py: teacher, student from scratch, distilled student.

    python recipes/vit_distill.py --pair cnn_vit --output_dir out/cnn_vit \
        --num_train_epochs 50 --teacher_epochs 60 --learning_rate 5e-4 --weight_decay 0.05 --warmup_steps 500 \
        --per_device_train_batch_size 128 --eval_strategy epoch --logging_strategy epoch --save_strategy no \
        --alpha 0.5 --temperature 2

    accelerate launch recipes/vit_distill.py --pair vit --output_dir out/vit ...   # same options, several GPUs

    # reuse the ResNet-50 teacher trained by recipes/cifar_resnet.py
    python recipes/vit_distill.py --pair cnn_vit --teacher_name_or_path out/cifar_resnet/teacher --output_dir out/x ...

Offline, on the digits data with small models:

    python recipes/vit_distill.py recipes/configs/digits_demo.json --pair cnn_vit --teacher_model resnet18 \
        --student_model test_vit --output_dir out/digits_cnn_vit
"""

from dataclasses import dataclass, field

from hf_distill import DistillationTrainingArguments
from hf_distill.evaluation.comparison import Comparison, ComparisonArguments
from hf_distill.recipes.args import end_distributed, parse_recipe_args
from hf_distill.recipes.vision import (
    ImageDataArguments,
    ImageModelArguments,
    build_vision_setup,
)

# teacher, student for each --pair
PAIRS = {
    "vit": ("vit_small_patch16_224", "vit_tiny_patch16_224"),
    "cnn_vit": ("resnet50", "deit_tiny_patch16_224"),
}


@dataclass
class ViTModelArguments(ImageModelArguments):
    pair: str = field(default="vit", metadata={"help": "Teacher / student pair.", "choices": list(PAIRS)})
    teacher_model: str | None = field(default=None, metadata={"help": "timm name of the teacher (default: pair's)."})
    student_model: str | None = field(default=None, metadata={"help": "timm name of the student (default: pair's)."})


def main(argv: list[str] | None = None) -> dict | None:
    model_args, data_args, comparison_args, training_args = parse_recipe_args(
        (ViTModelArguments, ImageDataArguments, ComparisonArguments, DistillationTrainingArguments), argv
    )

    # ---- Models: the pair's defaults unless named ----
    teacher, student = PAIRS[model_args.pair]
    model_args.teacher_model = model_args.teacher_model or teacher
    model_args.student_model = model_args.student_model or student

    # ---- Dataset and models: loaded and checked (names, paths, label counts) before any training ----
    setup = build_vision_setup(model_args, data_args, training_args, comparison_args)

    # ---- Training: teacher (unless given), then per seed a student from scratch and a distilled one ----
    report = Comparison(setup, training_args, comparison_args).run()
    end_distributed()
    return report


if __name__ == "__main__":
    main()
