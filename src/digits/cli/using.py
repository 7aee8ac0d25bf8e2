"""Commands that use a trained model: `predict` on picture files, `serve` for the page and the API, and
`export` to ONNX, LiteRT or a SavedModel."""

from __future__ import annotations

import sys
from pathlib import Path

from digits.cli.options import check_range
from digits.errors import DigitsError

# --- predict ------------------------------------------------------------------------------------------


def add_predict_commands(subcommands) -> None:
    predict = subcommands.add_parser(
        "predict",
        help="read the digit, or the number, in your own pictures (PNG, JPEG, BMP, GIF, TIFF, WebP)",
        description="Find the digits in each picture (a number of up to 12 digits, left to right), prepare each "
        "the way MNIST was prepared (light ink on black, fitted in 20x20, centred by mass in 28x28) and print "
        "the number and its probability (for one digit, the likeliest digits too). Folders are walked in sorted "
        "order, skipping hidden files. The exit status is 0 only if every file was read.",
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE|DIR", help="picture files or folders of them")
    predict.add_argument(
        "--model", metavar="RUN|FILE.keras|FILE.onnx",
        help="a run folder, .keras file or exported .onnx file (default: the shipped model)"
    )
    predict.add_argument("--json", action="store_true", help="print one JSON document, not one line per file")
    predict.add_argument(
        "--show", type=Path, metavar="DIR",
        help="write each picture, each digit's box and reading drawn on it, beside the 28x28 views the model saw"
    )
    predict.add_argument("--top", type=int, default=3, metavar="K", help="how many likeliest digits to list (3)")
    predict.set_defaults(handler=run_predict)


def run_predict(args) -> int:
    import json

    from digits.api import predict
    from digits.inference.classifier import load_classifier
    from digits.inference.files import find_image_files, result_line, results_document, save_views

    check_range("--top", args.top, 1, 10)
    if not find_image_files(args.inputs):  # Reported before the model loads.
        raise DigitsError(f"No files found in {', '.join(args.inputs)}; give pictures or folders holding some.")
    classifier = load_classifier(args.model)
    results = predict(args.inputs, classifier, keep_originals=args.show is not None)
    if args.show is not None:
        save_views(results, args.show)
    if args.json:
        print(json.dumps(results_document(classifier, results, args.top), indent=2))
    else:
        for result in results:
            print(result_line(result, args.top))
    failed = sum(result.prediction is None for result in results)
    if failed:
        print(f"digits: {failed} of {len(results)} files could not be read.", file=sys.stderr)
    return 1 if failed else 0


# --- serve --------------------------------------------------------------------------------------------


def add_serve_commands(subcommands) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="a draw-a-digit web page and a REST API",
        description="Load a model once and serve the draw-a-digit page at / and the JSON API "
        "(POST /predict, GET /health, GET /model, schema at /openapi.json) with uvicorn.",
    )
    serve.add_argument("--model", metavar="RUN|FILE.keras|FILE.onnx",
                       help="a run folder, .keras file or exported .onnx file (default: the shipped model, "
                       "on ONNX Runtime when it is installed)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    serve.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                       help="a host name the server is reached under, as behind a reverse proxy (repeatable): "
                       "requests for it and pages under it are answered, not refused with 421 or 403")
    serve.set_defaults(handler=run_serve)


def run_serve(args) -> int:
    check_range("--port", args.port, 0, 65535)  # Before the model loads.
    from digits.serving.process import serve

    serve(args.model, host=args.host, port=args.port, allowed_hosts=args.allow_host)
    return 0


# --- export (issue 17) ----------------------------------------------------------------------------


def add_export_commands(subcommands) -> None:
    export = subcommands.add_parser(
        "export",
        help="write a model as ONNX, LiteRT (.tflite) or a TensorFlow SavedModel, checked against Keras",
        description="Export the model of a run folder or .keras file with Keras's exporter, then classify 1,000 "
        "MNIST test images with the export in its own runtime and with Keras: any differing digit, or a "
        "probability more than 1e-4 apart, is an error and leaves no file. A JSON sidecar (<file>.json) "
        "describes the input, the preprocessing, the classes and the check. Existing files are never replaced.",
    )
    export.add_argument("source", metavar="RUN|FILE.keras", help="a run folder or a .keras file")
    export.add_argument("--format", choices=["onnx", "litert", "saved_model"], default="onnx",
                        help="the format to write (onnx)")
    export.add_argument("--out", type=Path, metavar="PATH",
                        help="where to write (default: beside the source: model.onnx, model.tflite, ...)")
    export.set_defaults(handler=run_export)


def run_export(args) -> int:
    from digits.inference.export import export_model

    result = export_model(args.source, args.format, args.out, command=" ".join(["digits", *sys.argv[1:]]))
    print(f"Wrote {result.path} and {result.sidecar.name}; {result.check.line()}.")
    return 0
