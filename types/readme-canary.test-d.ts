// The README's canary example (a split, a pinning header, a mirror, a sticky pool), kept compiling.
import Fastify from 'fastify'
import upstream from '../lib/index.js'
const app = Fastify()
await app.register(upstream, {
  pools: {
    stable: { targets: ['http://10.0.0.7:3001', 'http://10.0.0.8:3001'], sticky: {} },
    canary: { targets: ['http://10.0.0.9:3001'] },
    shadow: { targets: ['http://10.0.1.5:3001'] }
  },
  routes: [{
    prefix: '/shop',
    pool: 'stable',
    match: [{ header: { 'x-canary': '1' }, pool: 'canary' }], // testers pin themselves to it
    split: { canary: 5 }, // 5% of clients, who stay there
    mirror: { pool: 'shadow', percent: 10 } // a copy of 10% of the traffic
  }]
})
