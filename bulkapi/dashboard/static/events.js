// A job's Server-Sent Events, read with fetch() so the credential travels in the
// Authorization header (EventSource cannot send one, and a URL would leak it to logs).

import { TERMINAL, problemOf, request } from "./api.js";

// Milliseconds before reconnecting until the stream says otherwise (its `retry` field).
const DEFAULT_RETRY = 2000;

function pause(milliseconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, milliseconds);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

// Splits a byte stream into SSE events ({event, id, data, retry}), as the HTML standard
// parses them: lines end with CR, LF or CRLF; a blank line ends an event.
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let skipLF = false;
  let event = { event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // A CR ending one chunk and an LF starting the next are one line end.
      const text = skipLF && value.startsWith("\n") ? value.slice(1) : value;
      skipLF = text.endsWith("\r");
      buffer += text;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length || event.id !== undefined || event.retry !== undefined) {
            yield { ...event, data: event.data.join("\n") };
          }
          event = { event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let content = colon < 0 ? "" : line.slice(colon + 1);
        if (content.startsWith(" ")) content = content.slice(1);
        if (field === "event") event.event = content;
        else if (field === "data") event.data.push(content);
        else if (field === "id" && !content.includes("\0")) event.id = content;
        else if (field === "retry" && /^\d+$/.test(content)) event.retry = Number(content);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// Calls onJob(job, eventName) for every event of the job until it is terminal or the
// signal aborts. A closed or broken stream is resumed with Last-Event-ID after the
// stream's retry delay; a refused one (401, 404) rejects with its ApiError.
export async function followJob(secret, path, onJob, signal) {
  let lastId = null;
  let retry = DEFAULT_RETRY;
  while (!signal.aborted) {
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let finished = false;
    try {
      const response = await request(secret, path, { headers, signal });
      if (response.status === 204) return; // nothing after the terminal event
      if (!response.ok) throw await problemOf(response);
      for await (const event of readEvents(response.body)) {
        if (event.retry !== undefined) retry = event.retry;
        if (event.id !== undefined) lastId = event.id;
        if (!event.data) continue;
        const job = JSON.parse(event.data);
        onJob(job, event.event);
        if (event.event === "status" && TERMINAL.has(job.status)) finished = true;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error.status) throw error; // the API refused: retrying will not help
      // the connection broke: resume below
    }
    if (finished) return;
    await pause(retry, signal);
  }
}
