// The service worker: on install it caches every file of the site (site.json lists them), then serves the
// site from that cache, so a second visit works with no network and no server. `toolchain web` writes the
// build's id into CACHE, so a rebuilt site replaces the old cache instead of mixing with it.

const CACHE = "toolchain-web-__BUILD__";

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const site = await (await fetch("./site.json", { cache: "no-store" })).json();
    const cache = await caches.open(CACHE);
    await cache.addAll(["./", "./site.json", ...site.files]);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const names = await caches.keys();
    await Promise.all(names.filter((n) => n.startsWith("toolchain-web-") && n !== CACHE).map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cached = await caches.match(request, { ignoreSearch: true, cacheName: CACHE });
    return cached ?? fetch(request);
  })());
});
