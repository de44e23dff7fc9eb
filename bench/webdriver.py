"""A minimal WebDriver client (W3C protocol over HTTP, standard library only) for the player
benchmarks: starts chromedriver on a loopback port and a headless Chromium session.
Every call has a timeout; `close()` ends the browser and the driver."""
import base64, json, os, re, signal, subprocess, tempfile, time, urllib.request


class Browser:
    def __init__(self, width=1280, height=860, downloads=None, extra=()):
        self.driver = subprocess.Popen(["chromedriver", "--port=0", "--allowed-ips=127.0.0.1"],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True, start_new_session=True)
        deadline = time.time() + 15
        self.port = None
        while time.time() < deadline and self.port is None:
            line = self.driver.stdout.readline()
            m = re.search(r"started successfully on port (\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.close()
            raise RuntimeError("chromedriver did not start")
        self.profile = tempfile.mkdtemp(prefix="dvrgate-bench-")
        prefs = {}
        if downloads:
            prefs = {"download.default_directory": downloads, "download.prompt_for_download": False}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                     "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}",
                     f"--user-data-dir={self.profile}", *extra],
            "prefs": prefs}}}}
        self.sid = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {path}: {e.read()[:300]!r}") from None

    def s(self, path):
        return f"/session/{self.sid}{path}"

    def goto(self, url):
        self._call("POST", self.s("/url"), {"url": url})

    def js(self, script, *args):
        return self._call("POST", self.s("/execute/sync"), {"script": script, "args": list(args)})

    def js_async(self, script, *args, timeout=60):
        """`script` ends by calling arguments[arguments.length - 1](result)."""
        self._call("POST", self.s("/timeouts"), {"script": int(timeout * 1000)})
        return self._call("POST", self.s("/execute/async"), {"script": script, "args": list(args)}, timeout + 5)

    def wait(self, script, timeout=30, every=0.1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(script)
            if v:
                return v
            time.sleep(every)
        raise TimeoutError(script)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self._call("GET", self.s("/screenshot"))))

    def close(self):
        try:
            if getattr(self, "sid", None):
                self._call("DELETE", self.s(""), timeout=10)
        except Exception:
            pass
        try:
            os.killpg(self.driver.pid, signal.SIGKILL)
        except Exception:
            pass
        self.driver.wait(timeout=10)
