/**
 * A tiny test harness that runs the same way in node and in a browser: register tests
 * with `test()`, assert with `eq`/`ok`/`throws`/`rejects`, and `run()` them all.
 */

/**
 * @typedef {object} TestResult
 * @property {string} name
 * @property {boolean} ok `true` for a skipped test too: it did not fail.
 * @property {boolean} skipped
 * @property {string | null} error The failure (with its stack), or why it was skipped.
 */

/**
 * @typedef {object} RunSummary
 * @property {number} passed
 * @property {number} failed
 * @property {number} skipped
 * @property {TestResult[]} results
 */

/** @type {{name: string, fn: () => unknown, skip: string | null}[]} */
const registered = [];

/** An assertion failed. */
export class AssertionError extends Error {
  name = "AssertionError";
}

/** Thrown by `skip()`: the test does not apply here. */
class Skip extends Error {
  name = "Skip";
}

/**
 * Register a test; `fn` may be async.
 *
 * @param {string} name
 * @param {() => unknown} fn
 * @param {{skip?: string | false | null}} [options] `skip`: why not to run it, if so.
 */
export function test(name, fn, { skip: reason = null } = {}) {
  registered.push({ name, fn, skip: reason || null });
}

/**
 * Stop the running test and report it as skipped.
 *
 * @param {string} reason
 * @returns {never}
 */
export function skip(reason) {
  throw new Skip(reason);
}

/**
 * A readable rendering of a value for failure messages.
 *
 * @param {unknown} value
 * @returns {string}
 */
export function show(value) {
  if (value instanceof Map) return `Map(${show([...value.entries()])})`;
  if (value instanceof Set) return `Set(${show([...value])})`;
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return `[function ${value.name || "anonymous"}]`;
  if (typeof value === "bigint" || typeof value === "symbol") return String(value);
  try {
    const text = JSON.stringify(value, (_key, v) => (v === undefined ? "<undefined>" : v));
    return text ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * Structural equality: primitives by `Object.is` (but `0` equals `-0`), arrays and plain
 * objects by their own enumerable keys, maps and sets by their entries, dates by time.
 *
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function deepEqual(a, b) {
  if (a === b || Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (a instanceof Date) return a.getTime() === /** @type {Date} */ (b).getTime();
  if (a instanceof Map) {
    const other = /** @type {Map<unknown, unknown>} */ (b);
    if (a.size !== other.size) return false;
    return [...a].every(([key, value]) => other.has(key) && deepEqual(value, other.get(key)));
  }
  if (a instanceof Set) {
    const other = /** @type {Set<unknown>} */ (b);
    return a.size === other.size && [...a].every((value) => other.has(value));
  }
  const keysA = Object.keys(a);
  const keysB = Object.keys(b);
  if (keysA.length !== keysB.length) return false;
  return keysA.every(
    (key) =>
      Object.hasOwn(b, key) &&
      deepEqual(/** @type {any} */ (a)[key], /** @type {any} */ (b)[key]),
  );
}

/**
 * Assert that `actual` deep-equals `expected`.
 *
 * @param {unknown} actual
 * @param {unknown} expected
 * @param {string} [message]
 */
export function eq(actual, expected, message = "") {
  if (!deepEqual(actual, expected)) {
    const prefix = message ? `${message}: ` : "";
    throw new AssertionError(`${prefix}expected ${show(expected)}, got ${show(actual)}`);
  }
}

/**
 * Assert that `value` is truthy.
 *
 * @param {unknown} value
 * @param {string} [message]
 */
export function ok(value, message = "") {
  if (!value) throw new AssertionError(message || `expected a truthy value, got ${show(value)}`);
}

/**
 * Check a caught error against what was expected: a class (instanceof), a RegExp (the
 * message matches) or a string (the error's name).
 *
 * @param {unknown} error
 * @param {Function | RegExp | string | undefined} expected
 * @param {string} message
 */
function checkError(error, expected, message) {
  const prefix = message ? `${message}: ` : "";
  const err = /** @type {{name?: string, message?: string}} */ (error ?? {});
  if (expected === undefined) return;
  if (typeof expected === "function" && !(error instanceof expected)) {
    throw new AssertionError(`${prefix}expected a ${expected.name}, got ${show(err.name)}`);
  }
  if (expected instanceof RegExp && !expected.test(String(err.message))) {
    const got = show(err.message);
    throw new AssertionError(`${prefix}expected a message matching ${expected}, got ${got}`);
  }
  if (typeof expected === "string" && err.name !== expected) {
    throw new AssertionError(`${prefix}expected an error named ${expected}, got ${show(err.name)}`);
  }
}

/**
 * Assert that `fn()` throws, and (when given) what.
 *
 * @param {() => unknown} fn
 * @param {Function | RegExp | string} [expected] A class, a message pattern or a name.
 * @param {string} [message]
 * @returns {unknown} The error.
 */
export function throws(fn, expected = undefined, message = "") {
  try {
    fn();
  } catch (error) {
    checkError(error, expected, message);
    return error;
  }
  throw new AssertionError(message || "expected an error, nothing was thrown");
}

/**
 * Assert that a promise (or what `fn()` returns) rejects, and (when given) with what.
 *
 * @param {Promise<unknown> | (() => Promise<unknown>)} promise
 * @param {Function | RegExp | string} [expected]
 * @param {string} [message]
 * @returns {Promise<unknown>} The error.
 */
export async function rejects(promise, expected = undefined, message = "") {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    checkError(error, expected, message);
    return error;
  }
  throw new AssertionError(message || "expected a rejection, the promise resolved");
}

/**
 * @param {unknown} error
 * @returns {string}
 */
function describe(error) {
  if (error instanceof Error) {
    const stack = error.stack ?? "";
    const head = `${error.name}: ${error.message}`;
    return stack.includes(error.message) ? stack : `${head}\n${stack}`;
  }
  return show(error);
}

/**
 * Run every registered test, one after another.
 *
 * @param {{timeoutMs?: number, onResult?: (result: TestResult) => void}} [options]
 *   `timeoutMs`: a test that takes longer fails; `onResult`: called as each one ends.
 * @returns {Promise<RunSummary>}
 */
export async function run({ timeoutMs = 5000, onResult = () => {} } = {}) {
  /** @type {TestResult[]} */
  const results = [];
  for (const { name, fn, skip: reason } of registered) {
    /** @type {TestResult} */
    let result;
    if (reason) {
      result = { name, ok: true, skipped: true, error: reason };
    } else {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new AssertionError(`timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([(async () => fn())(), timeout]);
        result = { name, ok: true, skipped: false, error: null };
      } catch (error) {
        result =
          error instanceof Skip
            ? { name, ok: true, skipped: true, error: error.message }
            : { name, ok: false, skipped: false, error: describe(error) };
      } finally {
        clearTimeout(timer);
      }
    }
    results.push(result);
    onResult(result);
  }
  return {
    passed: results.filter((r) => r.ok && !r.skipped).length,
    failed: results.filter((r) => !r.ok).length,
    skipped: results.filter((r) => r.skipped).length,
    results,
  };
}
