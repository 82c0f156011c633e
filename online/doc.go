// Package online is the learner role: it follows the judgments topic and
// keeps, for every study, a surrogate teacher that reflects each judgment
// within a second of its arrival, is refitted exactly from the Postgres
// record in the background, versioned, and evaluated on held-out human
// judgments it never trained on.
//
// # Consumption
//
// A Learner is a member of its own consumer group (Config.Group, default
// "alignet-learner"), independent of the persister's, so a slow database
// write path never makes the teacher stale. Learners of one group split
// the partitions, and with them the studies, since the topic is keyed by
// study. Each assigned partition is read from the offset stored in
// Postgres (table learner_offsets), not from the group's committed
// offset, because the offset must move in the same transaction as the
// teacher states and applied ids it covers; the same offset is committed
// to the group afterwards, best effort, so that Kafka tools show the lag.
// When the group rebalances, each partition steps what is pending, stores
// its progress and forgets its studies before the next generation starts.
// Messages that do not decode are skipped and counted (the persister
// dead-letters them). The partition count of the topic must not change
// while learners run: a study must live in one partition.
//
// # One actor per partition
//
// One goroutine owns everything of a partition's studies: the item index
// and the embeddings of the study's space (read from Postgres, and looked
// up again, without a restart, when a judgment names an item that lacks an
// embedding, at most every EmbeddingsRetry, and every EmbeddingsInterval
// while some are missing), the teacher, its Adam state, the replay buffer
// (a uniform reservoir sample of at most ReplayCap trained judgments), the
// held-out buffer (the newest HeldOutCap held-out judgments), the
// prequential windows, the set of applied judgment ids and the study's
// flagged workers. Database
// writes, refits, polls and embedding look-ups run on helper goroutines
// that report back to the actor, so no state is shared.
//
// # Online path
//
// Every arriving judgment whose id is new to the study is counted once in
// judgments_seen, then, unless excluded (see Roles), scored by the current
// teacher before it is trained on (prequential evaluation: accuracy and
// log-loss over the last 1,000 and 10,000 judgments). Held-out judgments
// are scored and kept for evaluation, never trained on. The others take
// Adam steps (learner.Teacher.Update, learner.learning_rate, the
// teacher's λ and τ) on batches of the fresh judgments plus ReplayBatch
// replayed ones. Batching is adaptive: under load a step takes every
// queued judgment up to MaxFresh; when the partition is quiet a step runs
// StepDelay after the last judgment. The teacher that is served, stored,
// scored and versioned is the exponential moving average (Averaging) of
// the Adam iterates, which removes most of the step noise: on THINGS it
// matches the refitted teacher. While no judgment arrives, idle replay
// steps continue for up to IdleEpochs passes over the replay buffer,
// using at most IdleShare of the partition's time. Before any fit the
// teacher is a scaled identity on inputs standardised over the embedded
// items (P = learner.out_dim or the space's dimension, λ the middle of
// learner.lambdas). Judgments whose items lack embeddings are counted
// (skipped, reason no_embedding) and left to the next refit, which reads
// them from Postgres.
//
// # Roles
//
// One rule, alignet.TrainingRole, decides what learning does with each
// judgment, from its query kind (stamped by the API, carried in the Kafka
// encoding and in judgments.query_kind), the study's settings and whether
// its worker is flagged:
//
//   - alignet.RoleExcluded (attention checks, and every judgment of a
//     flagged worker) is neither trained nor scored on, and counted as
//     skipped with reason excluded;
//   - alignet.RoleHeldOut (random queries in a study whose queries.mix
//     asks them; otherwise, and for judgments posted without a query, the
//     learner.held_out_share hash split of alignet.HeldOut) feeds the
//     prequential windows and the held-out buffer that scores versions,
//     and is counted as skipped with reason held_out;
//   - alignet.RoleTrain trains.
//
// One gate (roles, alignet.TrainingRoleOf on what a buffered judgment
// keeps: its kind, held-out score and worker hash) applies the rule on
// every path: each online step (decided again when the step runs), the
// batch builder (which checks every fresh and replayed sample once more),
// the replay and held-out buffers, the warm-up that refills them after a
// load or rebalance, and refits, which read the kinds from Postgres.
//
// The flagged workers of a study are read (db WorkerFlags) when the study
// is loaded; afterwards every PollInterval the partition polls the flag
// changes of all studies (FlagChangesSince, from its last answer less a
// margin) and keeps those of its own. When a worker becomes flagged, their
// judgments are excluded from then on: the queued ones at the next step,
// the buffered ones at once (they leave the replay and held-out buffers),
// and all of them from the next refit, which reads the record from
// Postgres. What the teacher already learnt from them stays until that
// refit. A worker whose flag is lifted is trained on again from then on,
// and their stored judgments from the next refit. A changed
// learner.held_out_share, or random queries switched on or off in the
// mix, moves the buffered judgments between the replay and held-out
// buffers by their new roles.
//
// # Exact path
//
// A refit starts in the background when judgments_seen reaches
// learner.min_judgments, then whenever it has grown by learner.refit_factor
// since the last refit started, and on a request (table refit_requests,
// polled every PollInterval; honoured even with learner.refits off). It
// waits up to RefitWait for Postgres to hold as many of the study's
// judgments as the learner has seen, reads the deduplicated record,
// sets the held-out judgments aside for evaluation and drops the excluded
// ones (by the roles of the study's settings and flagged workers when the
// refit started), splits the rest into training and validation judgments
// (seeded), chooses λ from learner.lambdas with
// L-BFGS fits of at most learner.max_iter iterations, and calibrates τ on
// the validation choices. Where the study has repeated triplets (one item
// set answered by several distinct workers) and learner.distill is on,
// the teacher is fitted to uncertainty-distilled soft targets
// (learner.EnsembleDistilledTargets: VICE and the hard-label teacher).
// Refits run on RefitWorkers goroutines, ConcurrentRefits at a time per
// process, so ingestion keeps a core; the actor goes on stepping. When
// the strongest λ of the grid wins, the grid is extended upward (few
// judgments need far stronger regularisation than the defaults, which
// suit 10⁵). The refitted teacher gets a fresh Adam state, the judgments
// trained on during the refit that its read did not include are replayed
// on top, and it is scored on all the held-out judgments of the record. It
// is swapped in and stored as a version (kind refit) unless the teacher it
// would replace predicts those held-out judgments clearly better (its mean
// log-loss lower by more than two standard errors of the paired
// difference), as can happen after a refit of a small record or of one far
// behind the stream; then the current teacher stays.
//
// # Versions
//
// A version is stored after every refit and, while the teacher changes,
// every learner.version_interval (kind online, evaluated on the held-out
// buffer); learner.keep_versions are kept. Each records the parameters
// (float32), hyper-parameters, judgments_seen, the Kafka offset covered
// ({partition: next offset}), the parent version and the evaluation:
// accuracy, NLL and ECE of the teacher and of the raw embeddings (dot
// products at τ=1) on the same held-out judgments, and KL(human‖model)
// and majority agreement where held-out item sets were answered by
// several workers (odd-one-out).
//
// # Durability
//
// While judgments arrive, each partition stores at least every
// FlushInterval (default 500ms), in one transaction
// (alignet.LearnerProgress): the states of its changed studies (table
// teacher_state), the hashes of the ids applied since the last flush
// (learner_seen) and its next offset (learner_offsets). A restarted or
// newly assigned learner resumes each study from its stored state, applied
// ids and offset, so a kill -9 loses at most the online steps since the
// last flush, never a stored version, and never counts a judgment twice:
// retried judgments (one id, two Kafka copies) are applied once. Versions
// are written after the flush that covers them.
//
// # Settings
//
// The learner settings of a study (alignet.LearnerSettings) are read when
// the study is loaded and again every SettingsInterval, so a PATCH takes
// effect without a restart: online switches the Adam steps, refits the
// automatic refits, held_out_share and queries.mix.random the roles (see
// Roles), the rest the next refit or step. A changed out_dim applies from
// the next refit.
//
// # Tables
//
// The learner writes teacher_state, teacher_versions, learner_seen and
// learner_offsets, and deletes the refit_requests it takes (recording them
// again if its partition is released first). It reads studies, study
// items, spaces, embeddings, judgments and worker_flags.
//
// # Metrics
//
// On Config.Registerer, labelled by study unless noted:
//
//	alignet_learner_judgments_applied_total        distinct ids applied
//	alignet_learner_judgments_skipped_total        not trained on, by reason: held_out,
//	                                               excluded, no_embedding, online_disabled,
//	                                               task_mismatch, duplicate, unknown_study
//	alignet_learner_undecodable_messages_total     (no label)
//	alignet_learner_prequential_accuracy           by window (1000, 10000)
//	alignet_learner_prequential_log_loss           by window
//	alignet_teacher_heldout_accuracy               newest version, by model (teacher, raw)
//	alignet_teacher_heldout_nll                    by model
//	alignet_teacher_heldout_ece                    by model
//	alignet_learner_freshness_seconds              at each stored state: now − accept time
//	                                               of the newest judgment it reflects
//	alignet_learner_consumer_lag                   by partition
//	alignet_teacher_refit_duration_seconds         histogram
//	alignet_teacher_refits_total                   by result (ok, kept, error)
//	alignet_teacher_versions_total                 by kind (refit, online)
//	alignet_learner_step_duration_seconds          histogram, by kind (fresh, idle, on_top)
//	alignet_learner_flush_duration_seconds         histogram (no label)
//	alignet_learner_flush_errors_total             (no label)
//	alignet_learner_studies                        studies owned (no label)
package online
