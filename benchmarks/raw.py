"""The physical limit: transfers with no mount in between. A logged-in session initiates a transfer by a direct
API call in the run's dialect (as the mount's client does; SOAP by literal envelopes), then the transfer URL is streamed by httpx (1 MiB
chunks) or curl. Over TLS (a simulator started with --tls) both trust the simulator's CA, and curl is held to the
cipher httpx negotiated (OpenSSL's defaults, as the mount's): the raw side pays for the same encryption."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

import httpcore
import httpx

from benchmarks.rig import VM, Simulator

MiB = 1 << 20
RELEASE = "8.0.1.0"

# httpcore reads the socket 64 KiB at a time by default, which caps a Python client well below the wire; the raw
# baseline is the best a client can do, so it reads 1 MiB at a time (what the mount's client does too).
httpcore.HTTP11Connection.READ_NUM_BYTES = MiB

HAVE_CURL = shutil.which("curl") is not None


class RawGuest:
    """Initiates downloads and uploads of guest files on the simulator's VM, over one kept-alive API session."""

    def __init__(self, sim: Simulator, api: str):
        self.sim = sim
        self.api = api
        verify = sim.verify
        self.http = httpx.Client(base_url=sim.url, timeout=120, verify=verify)
        # transfers: a fresh connection each, as the mount's client does (ESXi does not like kept-alive transfer
        # sockets); one client for all, since making one costs ~40 ms (it loads the CA bundle)
        self.transfers = httpx.Client(timeout=120, headers={"Connection": "close"}, verify=verify,
                                      limits=httpx.Limits(max_keepalive_connections=0))
        self.tls_version, self.tls_cipher = self._negotiated() if sim.ca_path else (None, None)
        if api == "soap":
            r = self._soap("SessionManager", "SessionManager", "Login",
                           "<userName>administrator@vsphere.local</userName><password>vmware</password>")
            self.http.headers["Cookie"] = f"vmware_soap_session={_soap_cookie(r)}"
            r = self._soap("SearchIndex", "SearchIndex", "FindByInventoryPath",
                           f"<inventoryPath>Datacenter/vm/{VM}</inventoryPath>")
            self.vm_id = _soap_text(r, "returnval")
        elif api == "vi-json":
            r = self._vi("SessionManager", "SessionManager", "Login",
                         {"userName": "administrator@vsphere.local", "password": "vmware"})
            r.raise_for_status()
            self.http.headers["vmware-api-session-id"] = r.headers["vmware-api-session-id"]
            r = self._vi("SearchIndex", "SearchIndex", "FindByInventoryPath", {"inventoryPath": f"Datacenter/vm/{VM}"})
            r.raise_for_status()
            self.vm_ref = {"_typeName": "ManagedObjectReference", "type": "VirtualMachine", "value": r.json()["value"]}
        else:
            r = self.http.post("/api/session", auth=("administrator@vsphere.local", "vmware"))
            r.raise_for_status()
            self.http.headers["vmware-api-session-id"] = r.json()
            r = self.http.get("/api/vcenter/vm", params={"names": VM})
            r.raise_for_status()
            self.vm_id = r.json()[0]["vm"]

    def _negotiated(self) -> tuple[str, str]:
        """The TLS version and cipher an OpenSSL client with default settings gets from the simulator."""
        with self.http.stream("GET", "/_sim/stats") as r:
            tls = r.extensions["network_stream"].get_extra_info("ssl_object")
            return tls.version(), tls.cipher()[0]

    def curl_args(self) -> list[str]:
        """curl's options for this simulator: over TLS its CA, and the cipher httpx (and the mount) negotiate."""
        if not self.sim.ca_path:
            return []
        cipher = ["--tls13-ciphers" if self.tls_version == "TLSv1.3" else "--ciphers", self.tls_cipher]
        return ["--cacert", self.sim.ca_path, *cipher]

    def _soap(self, mo_type: str, mo_id: str, method: str, params: str) -> httpx.Response:
        """A SOAP call with its parameters as XML (the simulator's fixed vCenter ids, as for VI/JSON below)."""
        body = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/'
                'soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
                f'<{method} xmlns="urn:vim25"><_this type="{mo_type}">{mo_id}</_this>{params}</{method}>'
                "</soapenv:Body></soapenv:Envelope>")
        r = self.http.post("/sdk", content=body.encode(), headers={"Content-Type": "text/xml; charset=utf-8",
                                                                    "SOAPAction": '"urn:vim25/8.0.3.0"'})
        r.raise_for_status()
        return r

    def _soap_guest(self, method: str, params: str) -> str:
        auth = ('<auth xsi:type="NamePasswordAuthentication"><interactiveSession>false</interactiveSession>'
                "<username>root</username><password>vmware</password></auth>")
        r = self._soap("GuestFileManager", "guestOperationsFileManager", method,
                       f'<vm type="VirtualMachine">{self.vm_id}</vm>{auth}{params}')
        return _soap_text(r, "url" if method == "InitiateFileTransferFromGuest" else "returnval")

    def _vi(self, mo_type: str, mo_id: str, method: str, body: dict) -> httpx.Response:
        return self.http.post(f"/sdk/vim25/{RELEASE}/{mo_type}/{mo_id}/{method}", json=body)

    def _vi_guest(self, method: str, **body) -> httpx.Response:
        auth = {"_typeName": "NamePasswordAuthentication", "interactiveSession": False, "username": "root",
                "password": "vmware"}
        r = self._vi("GuestFileManager", "guestOperationsFileManager", method, {"vm": self.vm_ref, "auth": auth, **body})
        r.raise_for_status()
        return r

    def _rest_create(self, spec: dict) -> str:
        creds = {"interactive_session": False, "type": "USERNAME_PASSWORD", "user_name": "root", "password": "vmware"}
        r = self.http.post(f"/api/vcenter/vm/{self.vm_id}/guest/filesystem", params={"action": "create"},
                           json={"credentials": creds, "spec": spec})
        r.raise_for_status()
        return r.json()

    def _host(self, url: str) -> str:
        host = httpx.URL(self.sim.url).host
        return url.replace("://*", f"://{host}", 1)

    def download_url(self, guest_path: str) -> str:
        if self.api == "soap":
            return self._host(self._soap_guest("InitiateFileTransferFromGuest",
                                               f"<guestFilePath>{escape(guest_path)}</guestFilePath>"))
        if self.api == "vi-json":
            return self._host(self._vi_guest("InitiateFileTransferFromGuest", guestFilePath=guest_path).json()["url"])
        return self._host(self._rest_create({"path": guest_path}))

    def upload_url(self, guest_path: str, size: int) -> str:
        if self.api == "soap":
            return self._host(self._soap_guest(
                "InitiateFileTransferToGuest", f"<guestFilePath>{escape(guest_path)}</guestFilePath><fileAttributes "
                f'xsi:type="GuestPosixFileAttributes"/><fileSize>{size}</fileSize><overwrite>true</overwrite>'))
        if self.api == "vi-json":
            return self._host(self._vi_guest("InitiateFileTransferToGuest", guestFilePath=guest_path,
                                             fileAttributes={"_typeName": "GuestPosixFileAttributes"},
                                             fileSize=size, overwrite=True).json())
        return self._host(self._rest_create({"path": guest_path, "attributes": {"overwrite": True, "size": size}}))

    def close(self) -> None:
        self.http.close()
        self.transfers.close()


def _soap_cookie(r: httpx.Response) -> str:
    m = re.search(r'vmware_soap_session=("[^"]*"|[^;\s]*)', r.headers.get("set-cookie", ""))
    if not m:
        raise RuntimeError("SOAP Login set no vmware_soap_session cookie")
    return m.group(1)


def _soap_text(r: httpx.Response, tag: str) -> str:
    """The text of the first <tag> in an answer (a URL or an id: no markup inside)."""
    m = re.search(rf"<{tag}\b[^>]*>([^<]*)</{tag}>", r.text)
    if not m:
        raise RuntimeError(f"no <{tag}> in the SOAP answer: {r.text[:200]!r}")
    return m.group(1).replace("&amp;", "&")


def get_httpx(guest: RawGuest, guest_path: str) -> dict:
    """Initiate + streamed GET, bytes dropped: {"bytes", "seconds" (whole), "ttfb_s" (initiate to first byte)}."""
    start = time.perf_counter()
    url = guest.download_url(guest_path)
    ttfb = None
    got = 0
    with guest.transfers.stream("GET", url) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():  # what each socket read gave (up to 1 MiB): the first byte is not held back
            if ttfb is None:
                ttfb = time.perf_counter() - start
            got += len(chunk)
    return {"bytes": got, "seconds": time.perf_counter() - start, "ttfb_s": ttfb}


def get_first_byte(guest: RawGuest, guest_path: str) -> float:
    """Seconds from the initiate call to the first byte of the GET's body (the rest is not read)."""
    start = time.perf_counter()
    url = guest.download_url(guest_path)
    with guest.transfers.stream("GET", url) as r:
        r.raise_for_status()
        for _ in r.iter_raw():
            return time.perf_counter() - start
    raise RuntimeError(f"empty body for {guest_path}")


def get_curl_start(guest: RawGuest, guest_path: str) -> tuple[subprocess.Popen, float]:
    """Initiate, then start `curl -o /dev/null URL` (returns the process and the start time, initiate included)."""
    start = time.perf_counter()
    url = guest.download_url(guest_path)
    proc = subprocess.Popen(["curl", "-sS", "--fail", *guest.curl_args(), "-o", "/dev/null",
                             "-w", "%{size_download} %{time_starttransfer}", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return proc, start


def finish_curl(proc: subprocess.Popen, start: float, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    end = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    size, _ = out.decode().split()
    return {"bytes": int(float(size)), "seconds": end - start}


def get_curl(guest: RawGuest, guest_path: str, timeout: float = 600) -> dict:
    proc, start = get_curl_start(guest, guest_path)
    return finish_curl(proc, start, timeout)


def put_httpx(guest: RawGuest, source: Path, guest_path: str) -> dict:
    """Initiate + PUT of `source` in 1 MiB chunks with its exact Content-Length."""
    size = source.stat().st_size

    def body():
        with open(source, "rb", buffering=0) as f:
            while chunk := f.read(MiB):
                yield chunk

    start = time.perf_counter()
    url = guest.upload_url(guest_path, size)
    r = guest.transfers.put(url, content=body(), headers={"Content-Length": str(size)})
    r.raise_for_status()
    return {"bytes": size, "seconds": time.perf_counter() - start}


def put_curl_start(guest: RawGuest, source: Path, guest_path: str) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    url = guest.upload_url(guest_path, source.stat().st_size)
    proc = subprocess.Popen(["curl", "-sS", "--fail", *guest.curl_args(), "-T", str(source), "-o", "/dev/null",
                             "-w", "%{size_upload} %{time_total}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return proc, start


def put_curl(guest: RawGuest, source: Path, guest_path: str, timeout: float = 600) -> dict:
    proc, start = put_curl_start(guest, source, guest_path)
    return finish_curl(proc, start, timeout)


def drop_guest_file(sim: Simulator, guest_path: str) -> None:
    """Remove a file the benchmark wrote into the guest (straight from the simulator's directory)."""
    try:
        os.unlink(sim.root / VM / guest_path.lstrip("/"))
    except FileNotFoundError:
        pass
