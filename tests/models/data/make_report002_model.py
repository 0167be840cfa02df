"""How report002_model.keras was made: run with the code of main at 77c139f (before the rename),
``PYTHONPATH=<that tree> python3 make_report002_model.py tests/models/data``; writes the file and its
expected outputs (report002_model_expected.npz)."""
import sys

import keras
import numpy as np

from kerasface.models import Report002Model

assert "teacher_student" in Report002Model.__module__

def tiny_backbone(size, dim, name):
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inp, keras.layers.Dense(dim, name="embedding")(x), name=name)

keras.utils.set_random_seed(0)
teacher = Report002Model(tiny_backbone(12, 6, "teacher_net"), num_classes=3, name="teacher")
student = Report002Model(tiny_backbone(16, 4, "student_net"), num_classes=3, teacher=teacher,
                         center_weight=0.1, embedding_l2_weight=0.1, soft_ce_weight=0.5, name="student")
rng = np.random.default_rng(0)
for w in student.weights:  # non-trivial values everywhere (BN statistics, centres, teacher)
    low = 0.5 if "variance" in w.path else -0.5
    w.assign(rng.uniform(low, low + 1.0, w.shape).astype("float32"))
x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
out = sys.argv[1]
student.save(f"{out}/report002_model.keras")
t_emb, t_logits = student.teacher_outputs(x)
np.savez(f"{out}/report002_model_expected.npz", images=x,
         logits=keras.ops.convert_to_numpy(student(x, training=False)),
         teacher_logits=keras.ops.convert_to_numpy(t_logits),
         centers=student.center_loss.centers.numpy(),
         projection=student.distill_projection.kernel.numpy())
