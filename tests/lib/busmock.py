'''Private D-Bus buses with a mock systemd, for testing qemu-hook's D-Bus side.

Run inside a private mount namespace with its own tmpfs on /run (tests/lib/fakehost.py's
enter_namespace(), or `unshare -m --propagation private` + `mount -t tmpfs tmpfs /run`): the
system bus goes to /run/dbus/system_bus_socket, where sd_bus_open_system() looks, and the user's
bus to /run/user/UID/bus. Refuses to run where those would be the real machine's.

    buses = Buses.start(user='liss')        # user=None: the system bus only
    buses.set_active('gdm.service', True)
    buses.fail_next_job('gdm.service', 'failed')
    ...run the code under test...
    buses.unit_state('pipewire.service', user=True)   # 'active', 'inactive', 'failed'
    buses.system_calls()                     # [('StopUnit', ['gdm.service', 'replace']), ...]
    buses.stop()

The user's bus is a session dbus-daemon run as the user, with the mock systemd also run as the
user: like a real one, it refuses root. The harness therefore talks to it from a child process
that runs as the user.
'''

import json
import os
import pwd
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, 'systemd_mock.py')
PYTHON = '/usr/bin/python3'
SYSTEM_SOCKET = '/run/dbus/system_bus_socket'
SYSTEMD = 'org.freedesktop.systemd1'
SYSTEMD_PATH = '/org/freedesktop/systemd1'
MOCK_IFACE = 'org.freedesktop.DBus.Mock'
UNIT_IFACE = SYSTEMD + '.Unit'

SYSTEM_UNITS = {
    'gdm.service': 'active',
    'user.slice': 'active',
    'system.slice': 'active',
    'init.scope': 'active',
    'libvirtd.service': 'active',
}
SYSTEM_ALIASES = {'display-manager.service': 'gdm.service'}
USER_UNITS = {
    'pipewire.socket': 'active',
    'pipewire.service': 'active',
    'pipewire-pulse.socket': 'active',
    'pipewire-pulse.service': 'active',
    'wireplumber.service': 'active',
}


def _mounts():
    '''(mount point, fs type) of this mount namespace.'''
    with open('/proc/self/mountinfo', encoding='utf-8') as f:
        for line in f:
            fields = line.split()
            sep = fields.index('-')
            yield fields[4], fields[sep + 1]


def check_private():
    '''The one guard: never start a bus where the real machine's clients would find it, and
    never run against a real systemd.'''
    try:
        if os.readlink('/proc/self/ns/mnt') == os.readlink('/proc/1/ns/mnt'):
            sys.exit('busmock: not in a private mount namespace; refusing to touch /run')
    except PermissionError:
        pass            # PID 1 out of reach (a container): the checks below still hold
    run_fs = [fstype for point, fstype in _mounts() if point == '/run']
    if not run_fs or run_fs[-1] != 'tmpfs':
        sys.exit('busmock: /run is not a tmpfs of its own; mount one in a private namespace first')
    if os.path.exists('/run/systemd/system'):
        sys.exit('busmock: a real systemd manages this /run; refusing')


def ensure_user(name, scratch, uid=1000):
    '''Makes the user exist in this namespace only: /etc gets an overlay (upper layer in scratch)
    unless it has one already, and the user is appended to its passwd and group. No useradd:
    it also writes /var/log/lastlog and faillog of the real machine.'''
    check_private()
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if ('/etc', 'overlay') not in set(_mounts()):
        upper, work = os.path.join(scratch, 'etc-upper'), os.path.join(scratch, 'etc-work')
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o',
                        f'lowerdir=/etc,upperdir={upper},workdir={work}', '/etc'], check=True)
    used = {p.pw_uid for p in pwd.getpwall()}
    while uid in used:
        uid += 1
    with open('/etc/group', 'a', encoding='utf-8') as f:
        f.write(f'{name}:x:{uid}:\n')
    with open('/etc/passwd', 'a', encoding='utf-8') as f:
        f.write(f'{name}:x:{uid}:{uid}:{name}:/nonexistent:/usr/sbin/nologin\n')
    return pwd.getpwnam(name)


def _wait(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f'busmock: {what} did not come up within {timeout} s')
        time.sleep(0.01)


def _plain(value):
    '''dbus-python values as plain Python ones.'''
    import dbus  # pylint: disable=import-outside-toplevel
    if isinstance(value, (dbus.Array, list, tuple, dbus.Struct)):
        return [_plain(v) for v in value]
    if isinstance(value, dbus.Dictionary):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32,
                          dbus.UInt64)):
        return int(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath, str)):
        return str(value)
    if isinstance(value, dbus.Double):
        return float(value)
    return value


def perform(address, request):
    '''Runs one request against the bus at address and returns plain Python values. Also the
    entry point of the child that talks to a user's bus with the user's identity.'''
    import dbus  # pylint: disable=import-outside-toplevel
    bus = dbus.bus.BusConnection(address)
    try:
        if request['op'] == 'wait':
            _wait(lambda: bus.name_has_owner(SYSTEMD), 'systemd mock', request.get('timeout', 10))
            return None
        if request['op'] == 'state':
            manager = bus.get_object(SYSTEMD, SYSTEMD_PATH)
            path = manager.GetUnit(request['unit'], dbus_interface=SYSTEMD + '.Manager')
            unit = bus.get_object(SYSTEMD, path)
            return _plain(unit.Get(request['iface'], request['prop'], dbus_interface=dbus.PROPERTIES_IFACE))
        obj = bus.get_object(SYSTEMD, request.get('path', SYSTEMD_PATH))
        method = obj.get_dbus_method(request['method'], request['iface'])
        return _plain(method(*request.get('args', [])))
    finally:
        bus.close()


CHILD = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import busmock
print(json.dumps(busmock.perform(sys.argv[2], json.loads(sys.argv[3]))))
'''


class Buses:
    '''A system bus with a mock systemd and, with a user, that user's bus with its own.'''

    def __init__(self):
        self.procs = []
        self.user = None
        self.uid = self.gid = None
        self.system_address = 'unix:path=' + SYSTEM_SOCKET
        self.user_address = None

    @classmethod
    def start(cls, user=None, system_units=None, user_units=None, aliases=None):
        check_private()
        if os.path.exists(SYSTEM_SOCKET):
            sys.exit(f'busmock: {SYSTEM_SOCKET} exists already; refusing to start a second bus')
        b = cls()
        try:
            b._start_system(SYSTEM_UNITS if system_units is None else system_units,
                            SYSTEM_ALIASES if aliases is None else aliases)
            if user:
                b._start_user(user, USER_UNITS if user_units is None else user_units)
        except BaseException:
            b.stop()
            raise
        return b

    def _spawn(self, argv, env, as_user=False):
        kwargs = {}
        if as_user:
            kwargs = {'user': self.uid, 'group': self.gid, 'extra_groups': []}
        p = subprocess.Popen(argv, env=env, cwd='/', stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, **kwargs)
        self.procs.append(p)
        return p

    def _start_system(self, units, aliases):
        os.makedirs('/run/dbus', exist_ok=True)
        env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'DBUS_SYSTEM_BUS_ADDRESS': self.system_address}
        # A session-type daemon: it allows everything, which is all a test needs, and listens
        # where the system bus is expected.
        self._spawn(['dbus-daemon', '--session', '--nofork', '--nopidfile', '--address=' + self.system_address], env)
        _wait(lambda: os.path.exists(SYSTEM_SOCKET), 'the system dbus-daemon')
        self._spawn([PYTHON, '-m', 'dbusmock', '--system', '-t', TEMPLATE,
                     '-p', json.dumps({'units': units, 'aliases': aliases})], env)
        perform(self.system_address, {'op': 'wait'})

    def _start_user(self, user, units):
        pw = pwd.getpwnam(user)
        self.user, self.uid, self.gid = user, pw.pw_uid, pw.pw_gid
        runtime = f'/run/user/{self.uid}'
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        os.chown(runtime, self.uid, self.gid)
        os.chmod(runtime, 0o700)
        socket = runtime + '/bus'
        self.user_address = 'unix:path=' + socket
        env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'HOME': '/', 'USER': user, 'LOGNAME': user,
               'XDG_RUNTIME_DIR': runtime, 'DBUS_SESSION_BUS_ADDRESS': self.user_address}
        self._spawn(['dbus-daemon', '--session', '--nofork', '--nopidfile', '--address=' + self.user_address],
                    env, as_user=True)
        _wait(lambda: os.path.exists(socket), "the user's dbus-daemon")
        self._spawn([PYTHON, '-m', 'dbusmock', '--session', '-t', TEMPLATE,
                     '-p', json.dumps({'units': units})], env, as_user=True)
        self._request(True, {'op': 'wait'})

    def _request(self, user, request):
        if not user:
            return perform(self.system_address, request)
        if not self.user:
            raise ValueError('busmock: started without a user')
        # The user's bus refuses root: ask from a child with the user's identity.
        out = subprocess.run([PYTHON, '-c', CHILD, HERE, self.user_address, json.dumps(request)],
                             user=self.uid, group=self.gid, extra_groups=[], cwd='/',
                             env={'PATH': '/usr/bin:/bin'}, check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    def _mock(self, user, method, *args):
        return self._request(user, {'op': 'call', 'iface': MOCK_IFACE, 'method': method, 'args': list(args)})

    def _calls(self, user):
        return [(name, args) for _, name, args in self._mock(user, 'GetCalls')]

    def system_calls(self):
        '''Methods called on the system manager so far: [(name, [args...]), ...].'''
        return self._calls(False)

    def user_calls(self):
        return self._calls(True)

    def clear_calls(self, user=False):
        self._mock(user, 'ClearCalls')

    def unit_state(self, name, user=False):
        '''ActiveState of a unit: "active", "inactive", "failed".'''
        return self._request(user, {'op': 'state', 'unit': name, 'iface': UNIT_IFACE, 'prop': 'ActiveState'})

    def unit_loaded(self, name, user=False):
        '''Whether a unit is loaded (a transient one that ended is not).'''
        try:
            self.unit_state(name, user)
            return True
        except Exception:  # pylint: disable=broad-except
            return False

    def allowed_cpus(self, name):
        '''AllowedCPUs of a slice or scope on the system manager, as the raw mask bytes.'''
        iface = SYSTEMD + ('.Slice' if name.endswith('.slice') else '.Scope')
        return self._request(False, {'op': 'state', 'unit': name, 'iface': iface, 'prop': 'AllowedCPUs'})

    def set_active(self, name, active, user=False):
        self._mock(user, 'SetActiveState', name, 'active' if active else 'inactive')

    def add_unit(self, name, state='inactive', user=False):
        self._mock(user, 'AddUnit', name, state)

    def fail_next_job(self, unit, result='failed', user=False):
        '''The next StartUnit/StopUnit job of unit ends with result ("failed", "timeout",
        "dependency", ...), or never ends with "hang".'''
        self._mock(user, 'FailNextJob', unit, result)

    def fail_next_call(self, unit, error='org.freedesktop.systemd1.UnitMasked',
                       message='Unit is masked.', user=False):
        '''The next StartUnit/StopUnit on unit raises the D-Bus error instead of queuing a job.'''
        self._mock(user, 'FailNextCall', unit, error, message)

    def set_exec_status(self, path, status, user=False):
        '''A oneshot transient service whose ExecStart is path exits with status (or "hang").'''
        self._mock(user, 'SetExecStatus', path, str(status))

    def early_signals(self, early=True, user=False):
        '''JobRemoved sent before the method's reply (the race a client must survive).'''
        self._mock(user, 'SetEarlySignals', early)

    def hold_call_at(self, k, mode, user=False):
        '''The K-th StartUnit/StopUnit/RestartUnit/SetUnitProperties from now is never answered,
        "before" it does anything or "after" it did it; held_caller() then gives its caller.'''
        self._mock(user, 'HoldCallAt', k, mode)

    def held_caller(self, user=False):
        '''The PID of the caller of the held call, 0 until it came.'''
        return self._mock(user, 'HeldCaller')

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        for path in (SYSTEM_SOCKET, self.user_address and self.user_address[len('unix:path='):]):
            if path and os.path.exists(path):
                os.unlink(path)
