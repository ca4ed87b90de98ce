/** Every test module: importing this registers all the tests with the harness. */
import "./harness.test.js";
import "./backoff.test.js";
import "./positions.test.js";
import "./store.test.js";
import "./batcher.test.js";
import "./hlc.test.js";
import "./throttle.test.js";
import "./persist.test.js";
import "./ids.test.js";
