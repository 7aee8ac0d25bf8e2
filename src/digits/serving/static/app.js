// The draw-a-digit page: draw with Pointer Events, send the square as a PNG to /predict, show the answer.
"use strict";

const PAPER = "#ffffff";
const INK = "#111111";
// Stroke width as a fraction of the square: thick enough to stay 2–3 pixels wide once shrunk to 28×28.
const STROKE_FRACTION = 0.065;
// While drawing, ask for a prediction at most this often; lifting the pen always asks at once.
const LIVE_INTERVAL_MS = 150;
// The server gets a half-size copy of the square: the digit still spans about 100 pixels, five times the
// 20 it is fitted into, and preparing it costs the server half the time (benchmarks/serve_load.py).
const SEND_SIDE = 140;

const pad = document.getElementById("pad");
// Each stroke reads the square back once; this keeps that read cheap.
const padContext = pad.getContext("2d", { willReadFrequently: true });
const padHint = document.getElementById("pad-hint");
const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file");
const digitOutput = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const message = document.getElementById("message");
const barRows = Array.from(document.querySelectorAll("#bars li"));
const viewCanvas = document.getElementById("view");
const viewContext = viewCanvas.getContext("2d");
const sendCanvas = Object.assign(document.createElement("canvas"), { width: SEND_SIDE, height: SEND_SIDE });
const sendContext = sendCanvas.getContext("2d");

let hasInk = false;
let activePointer = null;
let strokeStart = null; // The square as it was when the current stroke began.
let strokePoints = [];
// Bumped by Clear and by a new file, so an answer to an older picture is never shown.
let generation = 0;
let inFlight = false;
let another = false;
let lastSentAt = 0;
let liveTimer = null;

// --- drawing ------------------------------------------------------------------------------------

function clearPad() {
  // An explicit paper colour, never transparency: the PNG then means the same to every reader.
  padContext.fillStyle = PAPER;
  padContext.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  activePointer = null; // A stroke in progress ends here rather than bringing back the old picture.
  generation += 1;
  clearTimeout(liveTimer);
  liveTimer = null;
  padHint.hidden = false;
  showIdle("Draw a digit to start.");
}

function canvasPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

// Each stroke is redrawn whole from a snapshot taken when it began: one smooth path, not a chain of
// overlapping segments whose anti-aliased edges pile up into a ragged outline.
function drawStroke() {
  padContext.putImageData(strokeStart, 0, 0);
  padContext.strokeStyle = padContext.fillStyle = INK;
  padContext.lineWidth = pad.width * STROKE_FRACTION;
  padContext.lineCap = "round";
  padContext.lineJoin = "round";
  padContext.beginPath();
  const [first, ...rest] = strokePoints;
  if (rest.length === 0) {
    padContext.arc(first.x, first.y, padContext.lineWidth / 2, 0, 2 * Math.PI);
    padContext.fill();
    return;
  }
  // Quadratic curves through the midpoints smooth the corners between pointer samples.
  padContext.moveTo(first.x, first.y);
  for (let index = 1; index < strokePoints.length - 1; index += 1) {
    const point = strokePoints[index];
    const next = strokePoints[index + 1];
    padContext.quadraticCurveTo(point.x, point.y, (point.x + next.x) / 2, (point.y + next.y) / 2);
  }
  const last = strokePoints[strokePoints.length - 1];
  padContext.lineTo(last.x, last.y);
  padContext.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  activePointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  strokeStart = padContext.getImageData(0, 0, pad.width, pad.height);
  strokePoints = [canvasPoint(event)];
  drawStroke(); // A single tap leaves a dot.
  hasInk = true;
  padHint.hidden = true;
  scheduleLivePrediction();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  // Coalesced events keep fast strokes smooth instead of a few straight segments.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) strokePoints.push(canvasPoint(each));
  drawStroke();
  scheduleLivePrediction();
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  predictNow();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("lostpointercapture", endStroke);

document.getElementById("clear").addEventListener("click", clearPad);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearPad();
});

// --- asking the server --------------------------------------------------------------------------

// The picture sent to the server: the square at SEND_SIDE pixels, as a PNG blob.
function padPng() {
  sendContext.imageSmoothingEnabled = true;
  sendContext.imageSmoothingQuality = "high";
  sendContext.drawImage(pad, 0, 0, SEND_SIDE, SEND_SIDE);
  return new Promise((resolve) => sendCanvas.toBlob(resolve, "image/png"));
}

function scheduleLivePrediction() {
  if (liveTimer !== null) return;
  const wait = Math.max(0, LIVE_INTERVAL_MS - (performance.now() - lastSentAt));
  liveTimer = setTimeout(() => {
    liveTimer = null;
    predictDrawing();
  }, wait);
}

function predictNow() {
  clearTimeout(liveTimer);
  liveTimer = null;
  predictDrawing();
}

async function predictDrawing() {
  if (!hasInk) return;
  // One request at a time; strokes made meanwhile are sent as soon as it returns.
  if (inFlight) {
    another = true;
    return;
  }
  inFlight = true;
  lastSentAt = performance.now();
  const sentFor = generation;
  try {
    const png = await padPng();
    // Half a stroke may read as no digit yet; say so only once the pen is lifted.
    await predict(png, sentFor, { quietNoDigit: activePointer !== null });
  } finally {
    inFlight = false;
  }
  if (another) {
    another = false;
    predictDrawing();
  }
}

async function predict(image, sentFor, { quietNoDigit = false } = {}) {
  let request = { method: "POST", headers: { "Content-Type": "image/png" }, body: image };
  if (image instanceof File) {
    // A form upload carries the file's name, so a message can say which file it is about.
    const form = new FormData();
    form.append("file", image, image.name);
    request = { method: "POST", body: form };
  }
  let response;
  let body = null;
  try {
    response = await fetch("/predict", request);
    body = await response.json().catch(() => null);
  } catch (error) {
    if (sentFor === generation) showError("The server cannot be reached; is `digits serve` still running?");
    return;
  }
  if (sentFor !== generation || (quietNoDigit && response.status === 422)) return;
  if (response.ok && body) showPrediction(body);
  else showError((body && body.detail) || `The server answered with status ${response.status}.`);
}

// --- showing the answer -------------------------------------------------------------------------

function percent(probability) {
  return `${(probability * 100).toFixed(1)} %`;
}

function showPrediction(prediction) {
  message.hidden = true;
  digitOutput.textContent = String(prediction.digit);
  // A picture unlike any digit still shows the best guess, greyed, with a gentle word instead of "sure".
  const doubtful = prediction.verdict === "not a digit";
  digitOutput.classList.toggle("muted", doubtful);
  confidence.textContent = doubtful
    ? `This doesn't look like a digit. Best guess: ${prediction.digit} (${percent(prediction.probability)}).`
    : `${percent(prediction.probability)} sure`;
  barRows.forEach((row, digit) => {
    const probability = prediction.probabilities[digit];
    row.querySelector(".bar-fill").style.width = `${(probability * 100).toFixed(2)}%`;
    row.querySelector(".bar-value").textContent = percent(probability);
    row.classList.toggle("top", digit === prediction.digit);
  });
  drawView(prediction.view);
}

function drawView(view) {
  const pixels = viewContext.createImageData(28, 28);
  view.forEach((row, y) =>
    row.forEach((value, x) => {
      const offset = (y * 28 + x) * 4;
      pixels.data[offset] = pixels.data[offset + 1] = pixels.data[offset + 2] = value;
      pixels.data[offset + 3] = 255;
    }),
  );
  viewContext.putImageData(pixels, 0, 0);
}

function showIdle(text) {
  message.hidden = true;
  digitOutput.textContent = "?";
  digitOutput.classList.add("muted");
  confidence.textContent = text;
  barRows.forEach((row) => {
    row.querySelector(".bar-fill").style.width = "0%";
    row.querySelector(".bar-value").textContent = "–";
    row.classList.remove("top");
  });
  viewContext.fillStyle = "#000000";
  viewContext.fillRect(0, 0, 28, 28);
}

function showError(text) {
  showIdle("No answer for this picture.");
  message.textContent = text;
  message.hidden = false;
}

// --- image files --------------------------------------------------------------------------------

async function predictFile(file) {
  clearPad();
  padHint.hidden = true;
  const sentFor = generation;
  confidence.textContent = `Reading ${file.name}…`;
  try {
    // Show the picture in the square; the server still reads the original file.
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const width = bitmap.width * scale;
    const height = bitmap.height * scale;
    padContext.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
    hasInk = true;
  } catch (error) {
    // The browser cannot show every format (TIFF, say); the server may still read it.
  }
  await predict(file, sentFor);
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) predictFile(fileInput.files[0]);
  fileInput.value = "";
});

// A file dropped anywhere on the page is read rather than opened by the browser.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropZone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) predictFile(file);
});

// --- the model ----------------------------------------------------------------------------------

async function describeModel() {
  const info = document.getElementById("model-info");
  try {
    const model = await (await fetch("/model")).json();
    const parts = [`Model ${model.name}`];
    if (model.architecture) info.title = model.architecture;
    if (model.parameters) parts.push(`${model.parameters.toLocaleString("en")} parameters`);
    if (model.test_accuracy !== null && model.test_accuracy !== undefined)
      parts.push(`${(model.test_accuracy * 100).toFixed(2)} % on the MNIST test set`);
    info.textContent = parts.join(" · ");
  } catch (error) {
    info.textContent = "The model's description is unavailable.";
  }
}

clearPad();
describeModel();
