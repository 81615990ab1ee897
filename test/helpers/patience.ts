/**
 * How long a test waits for something that should happen before it calls the wait hung.
 * Only a hang guard, never a measure: far above any normal wait, also under user-mode
 * emulation (`npm run test:arm64`), where everything runs 10 to 30 times slower.
 */
export const HANG_GUARD_MS = 120_000;

/** The timeout of a test that sets its own (it does much work): also only a hang guard. */
export const LONG_TEST_MS = 900_000;
