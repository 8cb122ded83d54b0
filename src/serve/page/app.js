// The amfmn service's page: search by sentence and keywords, thumbnails fetched with the bearer
// token, uploads, and locate jobs with a progress bar. No inline script (the CSP forbids it).
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'amfmn-token';

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

// Takes `token` out of the URL's fragment into sessionStorage; returns the other parameters.
function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has('token')) {
    sessionStorage.setItem(TOKEN_KEY, params.get('token'));
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }
  return params;
}

async function api(method, path, body, type) {
  const headers = { Authorization: 'Bearer ' + token() };
  if (type) headers['Content-Type'] = type;
  const response = await fetch(path, { method, headers, body });
  if (!response.ok) {
    let message = response.status + ' ' + response.statusText;
    try {
      message = (await response.json()).error.message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function say(text) {
  $('status').textContent = text;
}

async function blobUrl(path) {
  const response = await api('GET', path);
  return URL.createObjectURL(await response.blob());
}

function card(hit) {
  const div = document.createElement('div');
  div.className = 'card';
  div.dataset.id = String(hit.id);
  const img = document.createElement('img');
  img.alt = hit.name;
  blobUrl('/api/v1/images/' + hit.id + '/thumbnail').then((url) => { img.src = url; }, () => {});
  const caption = document.createElement('p');
  caption.textContent = hit.rank + '. ' + hit.name + ' (' + hit.score.toFixed(3) + ')';
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = 'locate';
  button.addEventListener('click', () => locate(hit.id));
  div.append(img, caption, button);
  return div;
}

function textQuery() {
  const body = {};
  const query = $('query').value.trim();
  const keywords = $('keywords').value.trim();
  if (query) body.query = query;
  if (keywords) body.keywords = keywords;
  return body;
}

async function search(event) {
  if (event) event.preventDefault();
  const body = Object.assign(textQuery(), { limit: 24 });
  if (!body.query && !body.keywords) return say('Type a sentence or keywords.');
  try {
    const response = await api('POST', '/api/v1/search/text', JSON.stringify(body), 'application/json');
    const result = await response.json();
    $('results').replaceChildren(...result.results.map(card));
    say(result.results.length + ' of ' + result.total_visible + ' images');
  } catch (error) {
    say('Search failed: ' + error.message);
  }
}

async function upload(event) {
  event.preventDefault();
  const visibility = $('visibility').value;
  let done = 0;
  for (const file of $('file').files) {
    const path = '/api/v1/images?visibility=' + visibility + '&name=' + encodeURIComponent(file.name);
    try {
      await api('POST', path, file, file.type || 'application/octet-stream');
      done += 1;
    } catch (error) {
      say(file.name + ': ' + error.message);
      return;
    }
  }
  say(done + ' image(s) uploaded; they are searchable once encoded.');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function watchJob(id) {
  $('job').hidden = false;
  for (;;) {
    const job = await (await api('GET', '/api/v1/jobs/' + id)).json();
    $('progress').max = Math.max(job.progress.total, 1);
    $('progress').value = job.progress.done;
    if (job.status === 'done') {
      $('overlay').src = await blobUrl(job.results.overlay);
      return say('Located.');
    }
    if (job.status !== 'queued' && job.status !== 'running') {
      return say('Locate ' + job.status + (job.error ? ': ' + job.error : ''));
    }
    say('Locating: ' + job.progress.done + ' / ' + job.progress.total + ' crops');
    await sleep(500);
  }
}

async function locate(imageId) {
  const body = textQuery();
  if (!body.query && !body.keywords) return say('Type what to locate first.');
  try {
    const response = await api('POST', '/api/v1/images/' + imageId + '/locate', JSON.stringify(body), 'application/json');
    await watchJob((await response.json()).job_id);
  } catch (error) {
    say('Locate failed: ' + error.message);
  }
}

function start() {
  const params = readFragment();
  $('token').value = token();
  $('token').addEventListener('change', () => sessionStorage.setItem(TOKEN_KEY, $('token').value.trim()));
  $('search').addEventListener('submit', search);
  $('upload').addEventListener('submit', upload);
  if (params.has('q')) $('query').value = params.get('q');
  if (params.has('k')) $('keywords').value = params.get('k');
  if (params.has('q') || params.has('k')) search();
  if (params.has('job')) watchJob(params.get('job')).catch((error) => say(error.message));
}

start();
