/**
 * How long StartOS waits between SIGTERM and SIGKILL. vllmd's own stop, from the signal: vLLM
 * drains for up to DRAIN_S (--drain-timeout), then has STOP_TIMEOUT_S (--stop-timeout) before
 * vllmd kills its process group, then up to KILL_WAIT_S for a member stuck in a driver. The
 * rest is room for vLLM's own teardown (engine and workers freeing the GPU) and vllmd's exit.
 * tests/test_startos.py checks these against vllmd's defaults.
 */
export const DRAIN_S = 5
export const STOP_TIMEOUT_S = 30
export const KILL_WAIT_S = 10
export const TEARDOWN_ROOM_S = 15

export const SIGTERM_TIMEOUT_MS = (DRAIN_S + STOP_TIMEOUT_S + KILL_WAIT_S + TEARDOWN_ROOM_S) * 1000
