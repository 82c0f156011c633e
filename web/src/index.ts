// @alignet/jspsych: odd-one-out and anchor plugins for jsPsych v7/v8, and a
// client for alignet's sessions, next queries and judgments.
export { AlignetClient, ApiError, participantFromURL, retryable } from "./client.js";
export type { ClientOptions, Completion, Display, Judgment, KeyValueStore, PageInfo, Participant, Query, Session } from "./client.js";
export { AnchorPlugin, OddOneOutPlugin, stimulusButton } from "./plugin.js";
export type { Stimulus } from "./plugin.js";
