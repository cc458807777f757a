// The large HTTP component of `make bench`: a wasi:http/proxy handler in JavaScript, built
// with componentize-js (SpiderMonkey inside, about 13 MB of wasm). It answers like
// http-hello's `GET /` (the same text), so the two are measured the same way.
addEventListener('fetch', (event) => {
  event.respondWith(
    new Response('hello from wasm\n', { headers: { 'content-type': 'text/plain' } }),
  );
});
