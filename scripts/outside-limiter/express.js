// Loopback servers limited by express-rate-limit (fixed windows of LIMIT per WINDOW_MS,
// anchored at the window's first hit, 429 beyond), one port per header dialect: IETF
// draft-6, draft-7, draft-8, and legacy X-RateLimit-* (reset in epoch seconds). Started by
// express.sh, which installs express and express-rate-limit with npm outside the repository.
// GET / is limited; /reset/* and /stats are not (outside_limiter calls them); every limited
// request is logged as "<epoch seconds.ms> <status>" to LOG_DIR/<dialect>.log.
const express = require('express');
const { rateLimit } = require('express-rate-limit');
const fs = require('fs');

const limit = Number(process.env.LIMIT || 10);
const windowMs = Number(process.env.WINDOW_MS || 2000);
const logDir = process.env.LOG_DIR;
const dialects = [
  ['draft-6', 18093, { standardHeaders: 'draft-6', legacyHeaders: false }],
  ['draft-7', 18094, { standardHeaders: 'draft-7', legacyHeaders: false }],
  ['draft-8', 18095, { standardHeaders: 'draft-8', legacyHeaders: false }],
  ['legacy', 18096, { standardHeaders: false, legacyHeaders: true }],
];
for (const [name, port, headers] of dialects) {
  const app = express();
  const log = fs.createWriteStream(`${logDir}/${name}.log`, { flags: 'a' });
  app.get(/^\/(reset\/.*|stats)$/, (_req, res) => res.send("(counts below, from the server's log)"));
  app.use((req, res, next) => {
    res.on('finish', () => log.write(`${(Date.now() / 1000).toFixed(3)} ${res.statusCode}\n`));
    next();
  });
  app.use(rateLimit({ windowMs, limit, ...headers }));
  app.get('/', (_req, res) => res.send('ok'));
  app.listen(port, '127.0.0.1');
}
