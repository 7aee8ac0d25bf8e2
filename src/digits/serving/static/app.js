// The draw-a-digit page: draw with Pointer Events (or upload a photo, or take one with the camera), send the
// drawing's grey pixels (or the photo's file) to /predict, show the number, each digit's box and reading, and the
// 28×28 views.
"use strict";

const PAPER = "#ffffff";
const INK = "#111111";
// Stroke width as a fraction of the box's height: thick enough to stay 2–3 pixels wide once shrunk to 28×28.
const STROKE_FRACTION = 0.065;
// While drawing, ask for a prediction at most this often; lifting the pen always asks at once.
const LIVE_INTERVAL_MS = 150;
// The server gets a half-size copy of the box: a digit still spans about 100 pixels, five times the
// 20 it is fitted into, and preparing it costs the server half the time (benchmarks/serve_load.py).
const SEND_SCALE = 0.5;
// Each digit's box and reading are drawn over the picture in this colour.
const BOX_COLOUR = "#e02828";

const pad = document.getElementById("pad");
// Each stroke reads the square back once; this keeps that read cheap.
const padContext = pad.getContext("2d", { willReadFrequently: true });
const padHint = document.getElementById("pad-hint");
const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file");
const digitOutput = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const resultCard = document.querySelector("section.result");
const message = document.getElementById("message");
const barRows = Array.from(document.querySelectorAll("#bars li"));
const viewCanvas = document.getElementById("view");
const viewContext = viewCanvas.getContext("2d");
const boxesCanvas = document.getElementById("boxes");
const boxesContext = boxesCanvas.getContext("2d");
const readings = document.getElementById("readings");
const cameraButton = document.getElementById("camera");
const snapButton = document.getElementById("snap");
const cameraView = document.getElementById("camera-view");
const sendCanvas = Object.assign(document.createElement("canvas"), {
  width: pad.width * SEND_SCALE,
  height: pad.height * SEND_SCALE,
});
// Each drawing sent is read back from it.
const sendContext = sendCanvas.getContext("2d", { willReadFrequently: true });
// A drawing is sent as its grey pixels, a binary PGM: the server reads them without decoding a PNG
// (docs/serve.md). A box holding colour (a photo drawn over) is sent as a PNG, read as any picture is.
const DRAWING_TYPE = "image/x-portable-graymap";

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
let filesBeingRead = 0;
// From the pixels of the picture sent to the pad's: a drawing is sent at SEND_SCALE; a photo is fitted in.
let pictureToPad = { scale: 1 / SEND_SCALE, left: 0, top: 0 };
let cameraStream = null;

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
  pictureToPad = { scale: 1 / SEND_SCALE, left: 0, top: 0 };
  stopCamera();
  showIdle("Draw a digit to start.");
  markBusy();
}

// The answer is busy while it may still change: the pen is down, or a reading is owed or on its way (a half-drawn
// digit's live reading is not the answer). Screen readers then announce the settled answer only, and tests wait for it.
function markBusy() {
  const busy = activePointer !== null || inFlight || another || liveTimer !== null || filesBeingRead > 0;
  resultCard.setAttribute("aria-busy", String(busy));
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
  padContext.lineWidth = pad.height * STROKE_FRACTION;
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
  markBusy();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("lostpointercapture", endStroke);

document.getElementById("clear").addEventListener("click", clearPad);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearPad();
});

// --- asking the server --------------------------------------------------------------------------

// The picture sent to the server: the box at SEND_SCALE, as a PGM of its grey pixels ({ body, type }); as a PNG
// when a pixel is coloured or not opaque, which grey bytes cannot say.
function padPicture() {
  sendContext.imageSmoothingEnabled = true;
  sendContext.imageSmoothingQuality = "high";
  sendContext.drawImage(pad, 0, 0, sendCanvas.width, sendCanvas.height);
  const { data, width, height } = sendContext.getImageData(0, 0, sendCanvas.width, sendCanvas.height);
  const header = new TextEncoder().encode(`P5\n${width} ${height}\n255\n`);
  const pgm = new Uint8Array(header.length + width * height);
  pgm.set(header);
  for (let source = 0, target = header.length; source < data.length; source += 4, target += 1) {
    const grey = data[source];
    if (data[source + 1] !== grey || data[source + 2] !== grey || data[source + 3] !== 255) {
      return new Promise((resolve) => sendCanvas.toBlob((png) => resolve({ body: png, type: "image/png" }), "image/png"));
    }
    pgm[target] = grey;
  }
  return Promise.resolve({ body: pgm, type: DRAWING_TYPE });
}

function scheduleLivePrediction() {
  if (liveTimer !== null) return;
  const wait = Math.max(0, LIVE_INTERVAL_MS - (performance.now() - lastSentAt));
  liveTimer = setTimeout(() => {
    liveTimer = null;
    predictDrawing();
  }, wait);
  markBusy();
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
    const picture = await padPicture();
    // Half a stroke may read as no digit, or as not a digit, yet; say so only once the pen is lifted.
    await predict(picture.body, sentFor, { midStroke: activePointer !== null, type: picture.type });
  } finally {
    inFlight = false;
  }
  if (another) {
    another = false;
    predictDrawing();
  }
  markBusy();
}

async function predict(image, sentFor, { midStroke = false, type = "image/png" } = {}) {
  let request = { method: "POST", headers: { "Content-Type": type }, body: image };
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
  if (sentFor !== generation || (midStroke && response.status === 422)) return;
  if (response.ok && body) showPrediction(body, { midStroke });
  else showError((body && body.detail) || `The server answered with status ${response.status}.`);
}

// --- showing the answer -------------------------------------------------------------------------

function percent(probability) {
  return `${(probability * 100).toFixed(1)} %`;
}

function showPrediction(prediction, { midStroke = false } = {}) {
  message.hidden = true;
  digitOutput.textContent = prediction.number;
  digitOutput.classList.toggle("number", prediction.number.length > 1);
  // A picture unlike any digit still shows the best guess, greyed, with a gentle word instead of "sure".
  const doubtful = prediction.verdict === "not a digit" || prediction.verdict === "not a number";
  const what = prediction.digits.length > 1 ? "number" : "digit";
  digitOutput.classList.toggle("muted", doubtful);
  // The detector's digit score says how digit-like the picture is (of a number: its least digit-like digit);
  // a model without a detector gives none.
  const score = prediction.digit_score == null ? "" : `digit score ${prediction.digit_score.toFixed(2)}`;
  if (doubtful && midStroke) {
    confidence.textContent = `Still drawing… best guess so far: ${prediction.number} (${percent(prediction.probability)}).`;
  } else {
    confidence.textContent = doubtful
      ? `This doesn't look like a ${what}${score && ` (${score})`}. ` +
        `Best guess: ${prediction.number} (${percent(prediction.probability)}).`
      : `${percent(prediction.probability)} sure${score && ` · ${score}`}`;
  }
  // The ten bars are one digit's; a number's digits each show their own reading instead.
  barRows.forEach((row, digit) => {
    const probability = prediction.probabilities ? prediction.probabilities[digit] : null;
    row.querySelector(".bar-fill").style.width = probability === null ? "0%" : `${(probability * 100).toFixed(2)}%`;
    row.querySelector(".bar-value").textContent = probability === null ? "–" : percent(probability);
    row.classList.toggle("top", digit === prediction.digit);
  });
  drawView(viewContext, prediction.views[0]);
  showDigits(prediction.digits, prediction.views);
}

// Each digit's box over the picture, its reading under the box, and its 28×28 view in the list below.
function showDigits(digits, views) {
  boxesContext.clearRect(0, 0, boxesCanvas.width, boxesCanvas.height);
  boxesContext.strokeStyle = boxesContext.fillStyle = BOX_COLOUR;
  boxesContext.lineWidth = 2;
  boxesContext.font = "bold 18px system-ui, sans-serif";
  boxesContext.textAlign = "center";
  boxesContext.textBaseline = "top";
  readings.replaceChildren();
  digits.forEach((reading, index) => {
    const [x, y, width, height] = reading.box;
    const left = pictureToPad.left + x * pictureToPad.scale;
    const top = pictureToPad.top + y * pictureToPad.scale;
    const right = left + width * pictureToPad.scale;
    const bottom = top + height * pictureToPad.scale;
    boxesContext.strokeRect(left, top, right - left, bottom - top);
    const below = Math.min(bottom + 3, boxesCanvas.height - 20);
    boxesContext.fillText(String(reading.digit), (left + right) / 2, below);

    const item = document.createElement("li");
    const view = Object.assign(document.createElement("canvas"), { width: 28, height: 28 });
    drawView(view.getContext("2d"), views[index]);
    const digit = document.createElement("strong");
    digit.textContent = String(reading.digit);
    const probability = document.createElement("span");
    probability.textContent = percent(reading.probability);
    item.append(view, digit, probability);
    item.dataset.digit = String(reading.digit);
    readings.append(item);
  });
}

function drawView(context, view) {
  const pixels = context.createImageData(28, 28);
  view.forEach((row, y) =>
    row.forEach((value, x) => {
      const offset = (y * 28 + x) * 4;
      pixels.data[offset] = pixels.data[offset + 1] = pixels.data[offset + 2] = value;
      pixels.data[offset + 3] = 255;
    }),
  );
  context.putImageData(pixels, 0, 0);
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
  digitOutput.classList.remove("number");
  boxesContext.clearRect(0, 0, boxesCanvas.width, boxesCanvas.height);
  readings.replaceChildren();
}

function showError(text) {
  showIdle("No answer for this picture.");
  message.textContent = text;
  message.hidden = false;
}

// --- image files --------------------------------------------------------------------------------

async function predictFile(file) {
  clearPad();
  filesBeingRead += 1;
  markBusy();
  try {
    await showAndReadFile(file);
  } finally {
    filesBeingRead -= 1;
    markBusy();
  }
}

async function showAndReadFile(file) {
  padHint.hidden = true;
  const sentFor = generation;
  confidence.textContent = `Reading ${file.name}…`;
  try {
    // Show the picture in the square; the server still reads the original file.
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const width = bitmap.width * scale;
    const height = bitmap.height * scale;
    pictureToPad = { scale, left: (pad.width - width) / 2, top: (pad.height - height) / 2 };
    padContext.drawImage(bitmap, pictureToPad.left, pictureToPad.top, width, height);
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

// --- the camera ---------------------------------------------------------------------------------

// The camera's picture shows in the box; "Take the picture" reads one frame, as an uploaded photo is read.
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives the page no camera (it needs https or localhost); upload a photo instead.");
    return;
  }
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (error) {
    showError(`The camera cannot be used (${error.name}); allow it in the browser, or upload a photo instead.`);
    return;
  }
  cameraView.srcObject = cameraStream;
  cameraView.hidden = false;
  padHint.hidden = true;
  snapButton.disabled = true; // Until the first frame arrives there is nothing to take.
  snapButton.hidden = false;
  cameraButton.hidden = true;
}

cameraView.addEventListener("loadeddata", () => {
  snapButton.disabled = false;
});

function stopCamera() {
  if (cameraStream) cameraStream.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  cameraView.srcObject = null;
  cameraView.hidden = true;
  snapButton.hidden = true;
  cameraButton.hidden = false;
}

async function takePicture() {
  if (!cameraStream || cameraView.videoWidth === 0) return;
  const frame = Object.assign(document.createElement("canvas"), {
    width: cameraView.videoWidth,
    height: cameraView.videoHeight,
  });
  frame.getContext("2d").drawImage(cameraView, 0, 0);
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/png"));
  await predictFile(new File([blob], "camera.png", { type: "image/png" }));
}

cameraButton.addEventListener("click", startCamera);
snapButton.addEventListener("click", takePicture);

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
