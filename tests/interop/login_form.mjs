// Drives isogate's login page over plain HTTP, the way a browser without JavaScript would:
// GET the authorize URL, keep the cookies it sets, read the form (its action and hidden
// inputs), POST it back with a username and password, and return the redirect's Location
// without following it (nothing listens on the redirect URI in these scripts).
//
// Used by openid_client_code.mjs; the Python scripts have their own copy of this logic.

export class LoginFailed extends Error {
  name = 'LoginFailed';
}

// Decodes the character references that isogate's escaper produces (and a few common ones).
function unescapeHtml(text) {
  return text.replace(/&(#\d+|#x[0-9a-f]+|amp|lt|gt|quot|apos);/gi, (_, ref) => {
    const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    if (ref[0] !== '#') return named[ref.toLowerCase()];
    const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return String.fromCodePoint(code);
  });
}

// The attributes of every `<tag ...>` in `html`, as plain objects (names lower-cased).
function tags(html, tag) {
  const found = [];
  for (const match of html.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, 'gi'))) {
    const attributes = {};
    for (const attr of match[1].matchAll(/([^\s"'=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
      attributes[attr[1].toLowerCase()] = unescapeHtml(attr[2] ?? attr[3] ?? attr[4] ?? '');
    }
    found.push(attributes);
  }
  return found;
}

// The text of the page's alert, if it shows one (a failed login says why there).
function alertText(html) {
  const match = html.match(/<p\b[^>]*role="alert"[^>]*>([^<]*)<\/p>/i);
  return match ? unescapeHtml(match[1]).trim() : undefined;
}

// A cookie jar for one host: name → value, from every Set-Cookie seen.
class Cookies {
  #jar = new Map();

  take(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq > 0) this.#jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }

  header() {
    return [...this.#jar].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  names() {
    return [...this.#jar.keys()];
  }
}

/**
 * Signs in at `authorizeUrl` as `username`/`password` and returns the redirect URL isogate
 * sends the browser to (a URL object). With `consent`, a consent page shown after the login
 * is answered "Allow" (remembered). Throws LoginFailed when any step differs from what a
 * browser would accept.
 */
export async function logIn(authorizeUrl, username, password, { fetch: fetchImpl = fetch, log = () => {}, consent = false } = {}) {
  const cookies = new Cookies();
  const page = await fetchImpl(authorizeUrl, { redirect: 'manual', headers: { accept: 'text/html' } });
  cookies.take(page);
  const html = await page.text();
  if (page.status !== 200) {
    throw new LoginFailed(`GET ${authorizeUrl.pathname}: HTTP ${page.status}, expected the login page (${alertText(html) ?? html.slice(0, 200)})`);
  }
  const type = page.headers.get('content-type') ?? '';
  if (!type.startsWith('text/html')) throw new LoginFailed(`GET ${authorizeUrl.pathname}: Content-Type ${type}, expected text/html`);

  const forms = tags(html, 'form');
  if (forms.length !== 1) throw new LoginFailed(`the login page has ${forms.length} forms, expected one`);
  const [form] = forms;
  if ((form.method ?? 'get').toLowerCase() !== 'post') throw new LoginFailed(`the login form's method is ${form.method}, expected post`);
  const action = new URL(form.action ?? '', page.url || authorizeUrl);

  const fields = new URLSearchParams();
  const inputs = tags(html, 'input');
  for (const input of inputs.filter((i) => i.type === 'hidden')) fields.append(input.name, input.value ?? '');
  for (const name of ['request', 'csrf']) {
    if (!fields.get(name)) throw new LoginFailed(`the login form has no hidden input ${name}`);
  }
  for (const name of ['username', 'password']) {
    if (!inputs.some((i) => i.name === name)) throw new LoginFailed(`the login form has no ${name} field`);
  }
  if (cookies.names().length === 0) throw new LoginFailed('the login page set no cookie');
  log(`login page: form posts to ${action.pathname}, hidden inputs ${[...fields.keys()].join(', ')}, cookies ${cookies.names().join(', ')}`);
  fields.append('username', username);
  fields.append('password', password);

  const answer = await fetchImpl(action, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      cookie: cookies.header(),
      origin: action.origin,
    },
    body: fields,
  });
  if (answer.status === 200 && consent) {
    return answerConsent(await answer.text(), action, cookies, fetchImpl, log);
  }
  const location = answer.headers.get('location');
  if (answer.status !== 303 || !location) {
    const text = await answer.text();
    throw new LoginFailed(`POST ${action.pathname}: HTTP ${answer.status}, expected a 303 redirect to the client${alertText(text) ? ` (the page says: ${alertText(text)})` : ''}`);
  }
  return new URL(location, action);
}

// Answers the consent page `html` (shown after the login POST to `loginAction`) with "Allow"
// and returns the redirect URL it leads to.
async function answerConsent(html, loginAction, cookies, fetchImpl, log) {
  const forms = tags(html, 'form');
  if (forms.length !== 1) throw new LoginFailed(`the consent page has ${forms.length} forms, expected one`);
  const action = new URL(forms[0].action ?? '', loginAction);
  const fields = new URLSearchParams();
  for (const input of tags(html, 'input').filter((i) => i.type === 'hidden')) fields.append(input.name, input.value ?? '');
  if (!tags(html, 'button').some((b) => b.name === 'decision' && b.value === 'allow')) {
    throw new LoginFailed(`the page after the login is neither a redirect nor a consent form: ${alertText(html) ?? html.slice(0, 200)}`);
  }
  log(`consent page: form posts to ${action.pathname}`);
  fields.append('remember', 'yes');
  fields.append('decision', 'allow');
  const answer = await fetchImpl(action, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookies.header(), origin: action.origin },
    body: fields,
  });
  const location = answer.headers.get('location');
  if (answer.status !== 303 || !location) {
    throw new LoginFailed(`POST ${action.pathname}: HTTP ${answer.status}, expected a 303 redirect to the client`);
  }
  return new URL(location, action);
}
