"""Read picture files with a classifier: what `digits predict` runs.

`predict_files` finds the digits in every file (`digits.pictures.segment`) and classifies the readable ones in one
batch with `digits.inference.classifier.Classifier.classify`: every file gets a `FileResult`, holding its
`NumberPrediction` (one digit or several) or, for a file that cannot be read, its error instead of stopping the
others. `results_document` and `result_line` are its JSON and its line per file, both from
`NumberPrediction.to_dict`; `save_views` draws each picture with each digit's box and reading, beside the 28×28
views the model read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digits.errors import DigitsError
from digits.inference.classifier import Classifier
from digits.inference.numbers import NOT_A_NUMBER, NUMBER, NumberPrediction, read_layouts
from digits.inference.prediction import DIGIT, NOT_A_DIGIT
from digits.inference.preparation import SHOW_HEIGHT, BoundedPreparer
from digits.pictures.decode import ImageError
from digits.pictures.segment import Layout

# --- predicting files ---------------------------------------------------------------------------------


@dataclass
class FileResult:
    """One file's answer: its `NumberPrediction` (its digits, their boxes and views), or the error that stopped it."""

    path: str
    prediction: NumberPrediction | None = None
    error: str | None = None
    original: Any = None  # A small RGB copy of the picture (PIL), kept for --show.
    scale: float = 1.0  # The original's pixels per picture pixel, to draw the boxes on it.

    @property
    def view(self) -> np.ndarray | None:
        """(28, 28) uint8: what the model read, for a picture of one digit (the first digit's of a number)."""
        return None if self.prediction is None else self.prediction.views[0]

    def _answered(self) -> NumberPrediction:
        """The prediction; a ValueError for a file that could not be read."""
        if self.prediction is None:
            raise ValueError(f"{self.path} has no answer: {self.error or 'it was not classified'}")
        return self.prediction

    @property
    def number(self) -> str:
        """The digits read, e.g. "2026"."""
        return self._answered().number

    @property
    def digit(self) -> int:
        """The digit of a picture of one digit (of a number: its first digit)."""
        return self._answered()[0].digit

    @property
    def probability(self) -> float:
        """The probability of the number (of the digit, for one digit) given."""
        return self._answered().probability

    def top(self, count: int = 3) -> list[tuple[int, float]]:
        """The `count` likeliest (digit, probability) pairs of the first digit (`Prediction.top`)."""
        return self._answered()[0].top(count)

    def to_dict(self, top: int = 3) -> dict:
        """{"path", then `NumberPrediction.to_dict`'s fields}, or {"path", "error"} for a file that could not be
        read."""
        if self.prediction is None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, **self.prediction.to_dict(top)}

    def __repr__(self) -> str:
        if self.prediction is None:
            return f"FileResult(path={self.path!r}, error={self.error!r})"
        return f"FileResult(path={self.path!r}, prediction={self.prediction!r})"


# A folder tree deeper than this, or holding more files, is not a folder of pictures to read at once.
MAX_FOLDER_DEPTH = 32
MAX_FILES = 100_000


def find_image_files(paths: list[str | Path]) -> list[Path]:
    """Files to read: each file as given, and each directory walked in sorted order, skipping hidden names.

    The walk keeps its own list of folders to visit (no recursion) and does not follow links to folders; a tree
    deeper than MAX_FOLDER_DEPTH or holding more than MAX_FILES files is one sentence, before any file is read.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(_walk(path, MAX_FILES - len(found)))
        else:
            found.append(path)  # A missing path still gets its own line ("does not exist").
        if len(found) > MAX_FILES:
            raise DigitsError(f"{path} holds more than {MAX_FILES:,} files; give fewer pictures at a time.")
    return found


def _walk(top: Path, limit: int) -> list[Path]:
    """The visible files under `top`, in sorted order of their paths inside it; at most `limit` + 1."""
    files: list[tuple[tuple[str, ...], Path]] = []
    folders: list[tuple[tuple[str, ...], Path]] = [((), top)]
    while folders:
        parts, folder = folders.pop()
        if len(parts) > MAX_FOLDER_DEPTH:
            raise DigitsError(f"{top} holds folders nested more than {MAX_FOLDER_DEPTH} deep; give the folder "
                              "that holds the pictures.")
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            raise DigitsError(f"Cannot list the folder {folder} ({error.strerror or error}); check its "
                              "permissions.") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(((*parts, entry.name), Path(entry.path)))
                elif entry.is_file():
                    files.append(((*parts, entry.name), Path(entry.path)))
            except OSError:
                continue  # Gone meanwhile, or unreadable: not a picture to read.
            if len(files) > limit:
                return [path for _, path in files]
    return [path for _, path in sorted(files)]


# How `FileResults.counts` names the files that could not be read, beside the verdicts of those that were.
UNREADABLE = "unreadable"


class FileResults(list[FileResult]):
    """The answers of one `digits.predict` over files, in the files' order: a plain list, which a notebook shows
    as a summary and each file's card (`digits.reporting.display.file_results_cards`)."""

    def counts(self) -> dict[str, int]:
        """How many files got each verdict ("digit", "not a digit", "number", "not a number"), and how many
        could not be read ("unreadable"), in that order, leaving out those none got."""
        verdicts = [UNREADABLE if result.prediction is None else result.prediction.verdict for result in self]
        order = (DIGIT, NOT_A_DIGIT, NUMBER, NOT_A_NUMBER, UNREADABLE)
        return {verdict: verdicts.count(verdict) for verdict in order if verdict in verdicts}


def predict_files(classifier: Classifier, paths: list[Path], *, keep_originals: bool = False) -> FileResults:
    """Find the digits in every file (in a worker process, within the server's time and memory limits:
    `BoundedPreparer`), classify those of the readable ones in one batch; errors stay per file."""
    from PIL import Image

    results = FileResults(FileResult(path=str(path)) for path in paths)
    readable: list[FileResult] = []
    layouts: list[Layout] = []
    with BoundedPreparer() as preparer:
        for result in results:
            try:
                layout, original, result.scale = preparer.prepare(result.path, keep_original=keep_originals)
            except ImageError as error:
                result.error = str(error)
                continue
            if original is not None:
                result.original = Image.fromarray(original)
            readable.append(result)
            layouts.append(layout)
    for result, reading in zip(readable, read_layouts(classifier.classify, layouts), strict=True):
        result.prediction = reading
    return results


def result_line(result: FileResult, top: int = 3) -> str:
    """One line for `digits predict`: the path, the number (or digit) and its probability; for one digit, the
    likeliest digits too; then the digit score, when the model has a not-a-digit detector.

    Control characters in a file name (a newline) are escaped, so a name cannot forge another line.
    """
    reading = result.prediction
    if reading is None:
        return one_line(f"{result.path}: error: {result.error}")
    # Why a picture was or was not called a digit (of a number: its least digit-like digit's), as the page shows it.
    score = "" if reading.digit_score is None else f"  digit score {reading.digit_score:.2f}"
    if len(reading) > 1:
        return one_line(f"{result.path}: {reading.line()}{score}")
    prediction = reading[0]
    likeliest = ", ".join(f"{digit} {probability:.1%}" for digit, probability in prediction.top(top))
    answer = f"{prediction.digit} ({prediction.probability:.1%})"
    if prediction.verdict == NOT_A_DIGIT:
        answer = f"does not look like a digit; best guess {answer}"
    return one_line(f"{result.path}: {answer}  top {top}: {likeliest}{score}")


def one_line(text: str) -> str:
    """`text` with every unprintable character (newline, carriage return, escape) written as a Python escape."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def results_document(classifier: Classifier, results: list[FileResult], top: int = 3) -> dict:
    """The `--json` document: the model, then one entry per file (a prediction or an error)."""
    return {
        "model": {"name": classifier.name, **_without(classifier.info, "command")},
        "results": [result.to_dict(top) for result in results],
        "failed": sum(result.prediction is None for result in results),
    }


def _without(info: dict, key: str) -> dict:
    return {name: value for name, value in info.items() if name != key}


# Each --show picture: the original, at most SHOW_HEIGHT tall, beside the 28×28 view at 10× (nearest).
SHOW_MARGIN = 10
# Each digit's box and reading are drawn over the original in this colour (seen on light and dark paper).
SHOW_BOX_COLOUR = (230, 40, 40)


def save_views(results: list[FileResult], folder: str | Path) -> list[Path]:
    """Write, for each read file, a PNG of the original, each digit's box and reading drawn on it, beside the
    28×28 views the model saw.

    Each is a new file: a name already taken in the folder (the input picture itself, or anything else)
    gets the next free "-2", "-3"... instead, so no existing file is ever written over.
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create the folder {folder} for the pictures ({error.strerror}); "
                          "choose another.") from None
    written = []
    for result in results:
        reading = result.prediction
        if reading is None or result.original is None:
            continue
        original = result.original.copy()
        drawing = ImageDraw.Draw(original)
        for prediction, (left, top, width, height) in zip(reading.predictions, reading.boxes.tolist(), strict=True):
            # Each digit's box, in the copy's pixels, and its reading above it (below, at the top edge).
            box = [round(left * result.scale), round(top * result.scale),
                   round((left + width) * result.scale) - 1, round((top + height) * result.scale) - 1]
            drawing.rectangle(box, outline=SHOW_BOX_COLOUR, width=2)
            drawing.text((box[0] + 2, box[1] - 12 if box[1] >= 12 else box[3] + 2), str(prediction.digit),
                         fill=SHOW_BOX_COLOUR)
        side = SHOW_HEIGHT if len(reading) == 1 else SHOW_HEIGHT // 2  # Each 28×28 view, enlarged (nearest).
        views_width = len(reading) * (side + SHOW_MARGIN) - SHOW_MARGIN
        width = original.width + views_width + 3 * SHOW_MARGIN
        sheet = Image.new("RGB", (width, SHOW_HEIGHT + 2 * SHOW_MARGIN + 20), (128, 128, 128))
        sheet.paste(original, (SHOW_MARGIN, SHOW_MARGIN + (SHOW_HEIGHT - original.height) // 2))
        for index, view in enumerate(reading.views):
            enlarged = Image.fromarray(view).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(enlarged.convert("RGB"), (original.width + 2 * SHOW_MARGIN + index * (side + SHOW_MARGIN),
                                                  SHOW_MARGIN))
        what = "view" if len(reading) == 1 else "views"
        caption = f"{reading.number} ({reading.probability:.1%})   original | 28x28 {what} the model saw"
        ImageDraw.Draw(sheet).text((SHOW_MARGIN, SHOW_HEIGHT + SHOW_MARGIN + 4), caption, fill=(255, 255, 255))
        name = Path(result.path).stem or "image"
        target, copy = folder / f"{name}.png", 2
        while True:
            try:
                # Created exclusively: an existing file, or a link planted at the name, is never written through.
                descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                target, copy = folder / f"{name}-{copy}.png", copy + 1
            except OSError as error:
                raise DigitsError(f"Cannot write {target} ({error.strerror}); choose another folder for the "
                                  "pictures.") from None
        try:
            with os.fdopen(descriptor, "wb") as output:
                sheet.save(output, "PNG")
        except OSError as error:
            target.unlink(missing_ok=True)
            raise DigitsError(f"Cannot write {target} ({error.strerror}); choose another folder for the "
                              "pictures.") from None
        written.append(target)
    return written
