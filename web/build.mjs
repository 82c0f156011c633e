// Bundles the plugins and the client into one browser script that sets the
// global AlignetJsPsych, for pages that load jsPsych from a <script> tag
// (which sets the global jsPsychModule this bundle takes jsPsych from).
import { build } from "esbuild";

const jspsychGlobal = {
  name: "jspsych-global",
  setup(b) {
    b.onResolve({ filter: /^jspsych$/ }, () => ({ path: "jspsych", namespace: "jspsych-global" }));
    b.onLoad({ filter: /.*/, namespace: "jspsych-global" }, () => ({
      contents: "module.exports = globalThis.jsPsychModule;",
      loader: "js",
    }));
  },
};

await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "iife",
  globalName: "AlignetJsPsych",
  target: "es2019",
  outfile: "dist/alignet-jspsych.browser.js",
  sourcemap: true,
  plugins: [jspsychGlobal],
  logLevel: "warning",
});
