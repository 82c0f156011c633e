// The plugins follow jsPsych's plugin conventions: a static info with a
// name, a version, typed parameters and data fields, and a trial method.
import assert from "node:assert/strict";
import { test } from "node:test";

// jsPsych's module touches window when it is loaded.
globalThis.window ??= globalThis;
const { ParameterType } = await import("jspsych");
const { OddOneOutPlugin, AnchorPlugin } = await import("../dist/index.js");

test("plugins carry jsPsych info", () => {
  for (const [P, name] of [[OddOneOutPlugin, "alignet-odd-one-out"], [AnchorPlugin, "alignet-anchor"]]) {
    const info = P.info;
    assert.equal(info.name, name);
    assert.match(info.version, /^\d+\.\d+\.\d+$/);
    assert.equal(info.parameters.client.type, ParameterType.OBJECT);
    assert.equal(info.parameters.stimuli.type, ParameterType.COMPLEX);
    assert.equal(info.parameters.stimuli.array, true);
    assert.equal(info.parameters.prompt.type, ParameterType.HTML_STRING);
    assert.equal(info.parameters.keys.type, ParameterType.BOOL);
    for (const [field, type] of Object.entries({ query_id: "STRING", odd: "STRING", close: "STRING", rt: "INT", judgment_id: "STRING", session_complete: "BOOL" })) {
      assert.equal(info.data[field].type, ParameterType[type], field);
    }
    assert.equal(info.data.items.array, true);
    assert.equal(typeof P.prototype.trial, "function");
    assert.equal(P.prototype.trial.length, 2, "trial(display_element, trial)");
  }
});

test("the browser bundle exposes the plugins and the client", async () => {
  const { readFile } = await import("node:fs/promises");
  const src = await readFile(new URL("../dist/alignet-jspsych.browser.js", import.meta.url), "utf8");
  const g = { jsPsychModule: { ParameterType } };
  new Function("globalThis", "var window = globalThis; " + src + "; globalThis.AlignetJsPsych = AlignetJsPsych;")(g);
  for (const k of ["OddOneOutPlugin", "AnchorPlugin", "AlignetClient", "participantFromURL"]) {
    assert.equal(typeof g.AlignetJsPsych[k], "function", k);
  }
  assert.equal(g.AlignetJsPsych.OddOneOutPlugin.info.parameters.client.type, ParameterType.OBJECT);
});
