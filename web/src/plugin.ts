// jsPsych plugins for odd-one-out and anchor trials. Each trial shows one
// query: the next one the server chose (with `client`), or the stimuli the
// timeline gives. A click or tap (or the keys 1-3) chooses; the plugin
// records the response time from when the stimuli were shown, hands the
// answer to the client (which keeps and resends it until the server
// acknowledged it) and ends the trial with this.jsPsych.finishTrial(data).
import { JsPsych, JsPsychPlugin, ParameterType, TrialType } from "jspsych";

import type { AlignetClient, Display, Query } from "./client.js";

/** A stimulus given directly: an item id with how to show it. */
export interface Stimulus {
  id: string;
  label?: string;
  image?: string;
}

const version = "0.1.0";

const parameters = {
  /** An AlignetClient with an open session: the trial shows its next query. */
  client: { type: ParameterType.OBJECT, default: null as unknown as AlignetClient | null },
  /** Stimuli to show instead of a server query: three of them (anchor: head first). */
  stimuli: { type: ParameterType.COMPLEX, array: true, default: [] as Stimulus[] },
  /** The question above the stimuli. */
  prompt: { type: ParameterType.HTML_STRING, default: "" },
  /** Allow answering with the keys 1, 2, 3. */
  keys: { type: ParameterType.BOOL, default: true },
  /** Longest wait, in ms, for the images to load before the choice is enabled anyway. */
  image_timeout: { type: ParameterType.INT, default: 10000 },
} as const;

const data = {
  /** The query answered; empty for given stimuli. */
  query_id: { type: ParameterType.STRING },
  /** The item ids shown, in order (anchor: head first). */
  items: { type: ParameterType.STRING, array: true },
  /** Odd-one-out: the item chosen as the odd one out. */
  odd: { type: ParameterType.STRING },
  /** Anchor: the item chosen as closer to the head, and the other one. */
  close: { type: ParameterType.STRING },
  far: { type: ParameterType.STRING },
  /** Response time in milliseconds, from when the stimuli were shown. */
  rt: { type: ParameterType.INT },
  /** The judgment id the client posts the answer under. */
  judgment_id: { type: ParameterType.STRING },
  /** True when the session was already complete: no trial was shown. */
  session_complete: { type: ParameterType.BOOL },
} as const;

const oddInfo = <const>{ name: "alignet-odd-one-out", version, parameters, data };
const anchorInfo = <const>{ name: "alignet-anchor", version, parameters, data };

type OddInfo = typeof oddInfo;
type AnchorInfo = typeof anchorInfo;
type Task = "odd-one-out" | "anchor";

/** fromStimuli makes the query of a trial given fixed stimuli. */
function fromStimuli(stimuli: Stimulus[]): Query {
  return { query_id: "", items: stimuli.map((s) => s.id), display: stimuli.map((s) => ({ label: s.label, image: s.image })) };
}

/** stimulusButton renders one item as a button (or a box for the anchor head). */
export function stimulusButton(doc: Document, item: string, d: Display | undefined, clickable: boolean, resolve: (src: string) => string): HTMLElement {
  const box = doc.createElement(clickable ? "button" : "div");
  box.className = clickable ? "alignet-stim" : "alignet-stim alignet-head";
  box.dataset.item = item;
  if (clickable) (box as HTMLButtonElement).type = "button";
  if (d?.image) {
    const img = doc.createElement("img");
    img.src = resolve(d.image);
    img.alt = d.label || item;
    img.draggable = false;
    box.appendChild(img);
  }
  if (d?.label || !d?.image) {
    const span = doc.createElement("span");
    span.className = "alignet-label";
    span.textContent = d?.label || item;
    box.appendChild(span);
  }
  return box;
}

const STYLE_ID = "alignet-jspsych-style";
const STYLE = `
.alignet-trial { max-width: 60rem; margin: 0 auto; padding: 0.5rem; }
.alignet-prompt { font-weight: 600; margin: 0.25rem 0 0.75rem; }
.alignet-row { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 0.6rem; }
.alignet-row.alignet-two { grid-template-columns: repeat(2, minmax(0, 1fr)); max-width: 40rem; margin: 0 auto; }
.alignet-head { max-width: 14rem; margin: 0 auto 0.75rem; }
.alignet-stim { font: inherit; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 0.4rem;
  width: 100%; min-height: 6rem; padding: 0.5rem; background: #fff; color: inherit; border: 2px solid #ccc;
  border-radius: 0.75rem; cursor: pointer; touch-action: manipulation; }
.alignet-stim.alignet-head { cursor: default; border-style: dashed; }
button.alignet-stim:not(:disabled):hover { border-color: #0071e3; }
button.alignet-stim:disabled { cursor: default; }
.alignet-stim img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; }
.alignet-label { font-weight: 600; overflow-wrap: anywhere; }
`;

function addStyle(doc: Document): void {
  if (doc.getElementById(STYLE_ID)) return;
  const s = doc.createElement("style");
  s.id = STYLE_ID;
  s.textContent = STYLE;
  doc.head.appendChild(s);
}

function imagesReady(root: HTMLElement, timeoutMs: number): Promise<void> {
  const imgs = Array.from(root.querySelectorAll("img"));
  const all = Promise.all(imgs.map((img) => (img.complete ? null : new Promise((r) => { img.onload = img.onerror = r; }))));
  return Promise.race([all.then(() => undefined), new Promise<void>((r) => setTimeout(r, timeoutMs))]);
}

/** runTrial is the trial of both plugins. */
async function runTrial(jsPsych: JsPsych, task: Task, el: HTMLElement, trial: TrialType<OddInfo>): Promise<void> {
  const client = (trial.client as AlignetClient | null) ?? undefined;
  let q: Query;
  if (trial.stimuli && (trial.stimuli as Stimulus[]).length > 0) {
    q = fromStimuli(trial.stimuli as Stimulus[]);
  } else if (client) {
    el.textContent = "";
    const next = await client.next();
    if (next === null) {
      jsPsych.finishTrial({ session_complete: true });
      return;
    }
    q = next;
  } else {
    throw new Error(`${task}: give the trial a client or stimuli`);
  }
  if (q.items.length !== 3) throw new Error(`${task}: a trial needs 3 items, got ${q.items.length}`);
  const doc = el.ownerDocument;
  addStyle(doc);
  const resolve = (src: string) => (client ? client.imageURL(src) : src);
  const root = doc.createElement("div");
  root.className = "alignet-trial";
  root.dataset.query = q.query_id;
  const prompt = doc.createElement("p");
  prompt.className = "alignet-prompt";
  prompt.innerHTML = trial.prompt || (task === "anchor" ? "Which of the two below is more similar to this one?" : "Which one is the odd one out?");
  root.appendChild(prompt);
  const buttons: HTMLButtonElement[] = [];
  const choices = task === "anchor" ? q.items.slice(1) : q.items;
  if (task === "anchor") root.appendChild(stimulusButton(doc, q.items[0], q.display?.[0], false, resolve));
  const row = doc.createElement("div");
  row.className = task === "anchor" ? "alignet-row alignet-two" : "alignet-row";
  const first = task === "anchor" ? 1 : 0;
  for (const [i, it] of choices.entries()) {
    const b = stimulusButton(doc, it, q.display?.[first + i], true, resolve) as HTMLButtonElement;
    b.disabled = true;
    buttons.push(b);
    row.appendChild(b);
  }
  root.appendChild(row);
  el.textContent = "";
  el.appendChild(root);
  el.dataset.query = q.query_id;
  await imagesReady(root, trial.image_timeout ?? 10000);
  const t0 = performance.now();
  for (const b of buttons) b.disabled = false;
  await new Promise<void>((done) => {
    const pick = (b: HTMLButtonElement) => {
      const rt = Math.round(performance.now() - t0);
      doc.removeEventListener("keydown", onKey);
      for (const x of buttons) x.disabled = true;
      const item = b.dataset.item!;
      const out: Record<string, unknown> = { query_id: q.query_id, items: q.items.slice(), rt, session_complete: false };
      if (task === "anchor") {
        out.close = item;
        out.far = choices[0] === item ? choices[1] : choices[0];
      } else {
        out.odd = item;
      }
      if (client && q.query_id) out.judgment_id = client.answer(q, item, rt, task).id;
      el.textContent = "";
      delete el.dataset.query;
      done();
      jsPsych.finishTrial(out);
    };
    const onKey = (ev: KeyboardEvent) => {
      const i = Number(ev.key) - 1;
      if (trial.keys && i >= 0 && i < buttons.length) pick(buttons[i]);
    };
    for (const b of buttons) b.addEventListener("click", () => pick(b));
    doc.addEventListener("keydown", onKey);
  });
}

/**
 * OddOneOutPlugin shows three items and asks which one is the odd one out.
 * With `client`, each trial is the server's next query (end a loop on
 * data.session_complete); with `stimuli`, the three given items.
 */
export class OddOneOutPlugin implements JsPsychPlugin<OddInfo> {
  static info = oddInfo;
  constructor(private jsPsych: JsPsych) {}

  trial(display_element: HTMLElement, trial: TrialType<OddInfo>): void {
    runTrial(this.jsPsych, "odd-one-out", display_element, trial).catch((err) => {
      console.error(err);
      display_element.textContent = String(err);
    });
  }
}

/**
 * AnchorPlugin shows a head item and two choices and asks which choice is
 * more similar to the head (salmon/NEXT style); the query's first item is
 * the head.
 */
export class AnchorPlugin implements JsPsychPlugin<AnchorInfo> {
  static info = anchorInfo;
  constructor(private jsPsych: JsPsych) {}

  trial(display_element: HTMLElement, trial: TrialType<AnchorInfo>): void {
    runTrial(this.jsPsych, "anchor", display_element, trial as TrialType<OddInfo>).catch((err) => {
      console.error(err);
      display_element.textContent = String(err);
    });
  }
}
