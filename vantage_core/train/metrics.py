"""Metric names (the guide's), one constant each; reports, callbacks and pruning share them."""

TRAIN_LOSS = "train/loss"
TRAIN_AUX_LOSS = "train/aux_loss"
TRAIN_Z_LOSS = "train/z_loss"
TRAIN_LR = "train/learning_rate"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_STEPS_PER_SEC = "train/throughput"          # steps per second (the guide's name)
TRAIN_TOKENS_PER_SEC = "train/tokens_per_sec"
EVAL_LOSS = "eval/loss"
EVAL_PPL = "eval/perplexity"
EVAL_EXACT_MATCH = "eval/exact_match"
EVAL_VALID_SQL = "eval/valid_sql"
# Share of written FROM/JOIN table names that belong to the question's own schema (not a
# training database's): copying from the prompt, an early signal before exact match moves.
EVAL_OWN_SCHEMA_TABLES = "eval/own_schema_tables"
EXPERT_UTILIZATION = "expert/utilization"
EXPERT_LOAD_BALANCE = "expert/load_balance"
EXPERT_TOKENS = "expert/tokens_per_expert"
DROPPED_FRACTION = "moe/dropped_fraction"
PEAK_MEMORY = "system/peak_memory_bytes"
STEP = "step"

TRAIN_REPORT_KEYS = (STEP, TRAIN_LOSS, TRAIN_AUX_LOSS, TRAIN_Z_LOSS, TRAIN_LR, TRAIN_GRAD_NORM,
                     TRAIN_STEPS_PER_SEC, TRAIN_TOKENS_PER_SEC, EXPERT_UTILIZATION,
                     EXPERT_LOAD_BALANCE, EXPERT_TOKENS, DROPPED_FRACTION, PEAK_MEMORY)
EVAL_REPORT_KEYS = (STEP, EVAL_LOSS, EVAL_PPL, EVAL_EXACT_MATCH, EVAL_VALID_SQL, EVAL_OWN_SCHEMA_TABLES,
                    "eval/num_examples")
