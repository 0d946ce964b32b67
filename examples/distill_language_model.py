"""From a text corpus to a sentence written by a distilled TFLite student.

The corpus is the documentation every Python ships with
(`pydoc_data.topics`); a WordPiece vocabulary is trained on it
(`keras_hub`, the `hub` extra). A decoder Transformer teacher learns the
next token, a much smaller student is distilled from it token by token
(from a top-k teacher cache: 32 logits a token instead of the whole
vocabulary), the student is exported to an int8 TFLite file, and the
LiteRT interpreter writes a sentence from a prompt.

    python examples/distill_language_model.py --epochs 6
"""

import argparse

import keras

import keras_distill
from keras_distill.app.bench import lm

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--prompt", default="The for statement")
args = parser.parse_args()

# %% The corpus, a tokenizer trained on it, and windows of 64 tokens.
train_texts, validation_texts = lm.corpus()
tokenizer = lm.word_piece_tokenizer(train_texts, size=2048)
x, y = lm.windows(tokenizer, train_texts, window=64)
x_val, y_val = lm.windows(tokenizer, validation_texts, window=64)
vocabulary = int(tokenizer.vocabulary_size())
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
train = keras_distill.pipelines.pipeline(x, y, 32, shuffle=True, seed=0)

# %% The teacher: two Transformer blocks of width 128.
teacher = lm.decoder_lm(vocabulary, 64, 128, 2, 4, seed=0, name="teacher")
teacher.compile(keras.optimizers.Adam(1e-3), ce)
teacher.fit(train, epochs=args.epochs + 2, verbose=2)

# %% The student, distilled from the teacher's 32 largest logits a token.
cache = keras_distill.teachers.TeacherCache(teacher, x, top_k=32, verbose=0)
print(
    f"teacher cache: {cache.nbytes / x.size:.0f} bytes a token "
    f"(the full distribution: {4 * vocabulary})"
)
student = lm.decoder_lm(vocabulary, 64, 48, 1, 2, seed=1, name="student")
distiller = keras_distill.Distiller(
    teacher,
    student,
    keras_distill.losses.LogitsDistillation(temperature=1.0),
    student_loss_weight=0.5,
)
distiller.compile(keras.optimizers.Adam(2e-3), ce)
distiller.fit(
    cache.dataset(x, y, batch_size=32, seed=0), epochs=args.epochs, verbose=2
)
for name, model in (("teacher", teacher), ("student", student)):
    print(
        f"{name}: validation cross-entropy "
        f"{lm.validation_ce(model, x_val, y_val):.3f} nats per token"
    )

# %% Export the student (int8 weights) and let LiteRT write a sentence.
report = keras_distill.export.tflite(
    student, "student_lm.tflite", quantize="dynamic", check_data=x_val[:32]
)
print(
    f"student_lm.tflite: {report.bytes:,} bytes, next-token agreement "
    f"with Keras {100 * report.argmax_agreement:.1f}%"
)
prompt = [int(t) for t in tokenizer(args.prompt)]
tokens = keras_distill.export.generate(
    "student_lm.tflite", prompt, max_new_tokens=20
)
print("generated:", tokenizer.detokenize(tokens))
