// Herald inbox service worker: shows Web Push notifications while no inbox page is open.
//
// Registered by /console/js/inbox.js with scope /console/. It has no 'fetch' handler on
// purpose: it never sits between the console pages and the network.
//
// A push from Herald is the delivery's JSON event, encrypted for this browser (RFC 8291)
// and decrypted by the browser before this handler runs:
//   {"type": "message", "id", "delivery_id", "topic", "recipient", "title", "body",
//    "data", "priority", "created_at"}
// (herald.channels.base.DeliveryJob.payload). A payload too large for a push (4 KiB) loses
// `data` first, then the end of `body`, then of `title` (each cut text ends in "…").

'use strict';

const INBOX_URL = '/console/inbox';

self.addEventListener('install', () => {
  // A new version takes over at once: the worker keeps no caches to migrate.
  self.skipWaiting();
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('push', (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    // Not JSON (not from Herald): still show something, since userVisibleOnly promises it.
    payload = { body: event.data ? event.data.text() : '' };
  }
  const title = payload.title || payload.topic || 'Herald';
  const options = {
    body: payload.body || '',
    // The message id as tag: a second push of the same message replaces the first
    // notification instead of stacking a duplicate.
    tag: payload.id || undefined,
    data: {
      id: payload.id || null,
      topic: payload.topic || null,
      created_at: payload.created_at || null,
      data: payload.data ?? null,
    },
    requireInteraction: payload.priority === 'urgent',
    timestamp: payload.created_at ? Date.parse(payload.created_at) || Date.now() : Date.now(),
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      // Focus an open inbox tab if there is one; open one otherwise.
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const client of windows) {
        const url = new URL(client.url);
        if (url.pathname === INBOX_URL && 'focus' in client) return client.focus();
      }
      return self.clients.openWindow(INBOX_URL);
    })(),
  );
});
