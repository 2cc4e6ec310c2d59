'''A systemd manager for python-dbusmock, closer to the real one than dbusmock's own template.

Loaded with `python3 -m dbusmock [--session] -t tests/lib/systemd_mock.py -p JSON`, where JSON is
{"units": {"gdm.service": "active", ...}, "aliases": {"display-manager.service": "gdm.service"}}.

Like systemd: unit objects at /org/freedesktop/systemd1/unit/<escaped name>, LoadUnit (a unit
that does not exist gets an object with LoadState "not-found"), GetUnit, StartUnit, StopUnit,
RestartUnit and ResetFailedUnit raising org.freedesktop.systemd1.NoSuchUnit, Subscribe (once per
client, then AlreadySubscribed) and Unsubscribe, JobNew and JobRemoved after the reply,
SetUnitProperties for AllowedCPUs, AllowedCPUs (ay) on the Slice, Scope and Service interfaces.

Test controls on org.freedesktop.DBus.Mock: AddUnit, SetActiveState, FailNextJob (the next job of
a unit ends with that result, or with "hang" never ends), FailNextCall (the next job method on a
unit raises that D-Bus error), SetEarlySignals (JobRemoved before the method's reply),
HoldCallAt (the K-th call from now of StartUnit, StopUnit, RestartUnit or SetUnitProperties is
never answered: "before" it does anything, or "after" it did it; HeldCaller then gives the
caller's PID, for the test to kill it there: a user's mock may not kill a root process itself).

StartTransientUnit (mode "fail": org.freedesktop.systemd1.UnitExists for a loaded unit) records
its properties, ExecStart included, as the call's arguments. A Type=exec (or simple) service goes
active; a Type=oneshot one "runs" its ExecStart: the exit status set with SetExecStatus for that
path (default 0, "hang": it never ends) decides its job's result ("done" or "failed") and, for a
failure, Result "exit-code", ExecMainStatus and ActiveState "failed". A transient unit that ends
inactive (or failed, with CollectMode inactive-or-failed) is unloaded, as systemd collects it.
'''

import dbus
from gi.repository import GLib

from dbusmock import MOCK_IFACE, mockobject

BUS_NAME = 'org.freedesktop.systemd1'
MAIN_OBJ = '/org/freedesktop/systemd1'
MAIN_IFACE = BUS_NAME + '.Manager'
UNIT_IFACE = BUS_NAME + '.Unit'
SYSTEM_BUS = True

NO_SUCH_UNIT = BUS_NAME + '.NoSuchUnit'
TYPE_IFACES = {'slice': 'Slice', 'scope': 'Scope', 'service': 'Service', 'socket': 'Socket'}
CPU_TYPES = ('slice', 'scope', 'service')


def escape(name):
    '''systemd's bus_label_escape(): [A-Za-z0-9] stay, anything else becomes _xx.'''
    return ''.join(c if c.isascii() and c.isalnum() else f'_{ord(c):02x}' for c in name)


def load(mock, parameters):
    mock.units = {}             # every name, aliases included -> object path
    mock.next_job_id = 1
    mock.fail_job = {}          # unit Id -> job result for its next job
    mock.fail_call = {}         # unit Id -> (error name, message) for its next job method
    mock.subscribers = set()
    mock.early_signals = False
    mock.calls_seen = 0         # calls that change something (changing_call)
    mock.hold_at = None         # (call number, "before" or "after")
    mock.held_caller = 0
    mock.exec_status = {}       # ExecStart path -> exit status of a oneshot, or "hang"
    mock.transient = {}         # transient unit -> CollectMode
    mock.AddProperties(MAIN_IFACE, {'Version': 'v252', 'Virtualization': ''})
    for name, state in (parameters or {}).get('units', {}).items():
        add_unit(mock, str(name), str(state))
    for alias, target in (parameters or {}).get('aliases', {}).items():
        add_alias(mock, str(alias), str(target))


def add_unit(mock, name, state='inactive', load_state='loaded'):
    path = f'{MAIN_OBJ}/unit/{escape(name)}'
    mock.units[name] = path
    mock.AddObject(path, UNIT_IFACE, {
        'Id': name,
        'Names': dbus.Array([name], signature='s'),
        'LoadState': load_state,
        'ActiveState': state,
        'SubState': {'active': 'running', 'failed': 'failed'}.get(state, 'dead'),
    }, [])
    kind = name.rsplit('.', 1)[-1]
    if kind in CPU_TYPES:
        mockobject.objects[path].AddProperties(f'{BUS_NAME}.{TYPE_IFACES[kind]}',
                                               {'AllowedCPUs': dbus.Array([], signature='y')})
    return path


def add_alias(mock, alias, target):
    path = mock.units[target]
    mock.units[alias] = path
    obj = mockobject.objects[path]
    obj.props[UNIT_IFACE]['Names'] = dbus.Array(list(obj.props[UNIT_IFACE]['Names']) + [alias], signature='s')


def unit_object(mock, name):
    path = mock.units.get(str(name))
    obj = mockobject.objects.get(path) if path else None
    if obj is None or obj.props[UNIT_IFACE]['LoadState'] == 'not-found':
        raise dbus.exceptions.DBusException(f'Unit {name} not loaded.', name=NO_SUCH_UNIT)
    return obj


def set_state(obj, state):
    obj.UpdateProperties(UNIT_IFACE, {
        'ActiveState': state,
        'SubState': {'active': 'running', 'failed': 'failed'}.get(state, 'dead'),
    })


def job(mock, name, target_state):
    obj = unit_object(mock, name)
    unit_id = str(obj.props[UNIT_IFACE]['Id'])
    if unit_id in mock.fail_call:
        error, message = mock.fail_call.pop(unit_id)
        raise dbus.exceptions.DBusException(message, name=error)
    result = mock.fail_job.pop(unit_id, 'done')
    job_id = mock.next_job_id
    mock.next_job_id += 1
    job_path = f'{MAIN_OBJ}/job/{job_id}'

    def finish():
        if result == 'done':
            set_state(obj, target_state)
        elif result == 'failed' and target_state in ('active', 'failed'):
            set_state(obj, 'failed')
        state = obj.props[UNIT_IFACE]['ActiveState']
        collect = mock.transient.get(unit_id)
        if collect and (state == 'inactive' or (state == 'failed' and collect == 'inactive-or-failed')):
            obj.props[UNIT_IFACE]['LoadState'] = 'not-found'
            del mock.transient[unit_id]
        mock.EmitSignal(MAIN_IFACE, 'JobRemoved', 'uoss', [job_id, job_path, unit_id, result])
        return False

    mock.EmitSignal(MAIN_IFACE, 'JobNew', 'uos', [job_id, job_path, unit_id])
    if result != 'hang':
        if mock.early_signals:
            finish()            # sent before the reply: clients must not miss it
        else:
            GLib.idle_add(finish)
    return job_path


def changing_call(mock, sender, reply, error, action):
    '''Answers a call that changes something with action()'s result or error, unless it is the
    held one (HoldCallAt): then it is never answered, and its caller's PID is kept.'''
    mock.calls_seen += 1
    mode = None
    if mock.hold_at and mock.hold_at[0] == mock.calls_seen:
        mode, mock.hold_at = mock.hold_at[1], None
    try:
        result = None if mode == 'before' else action()
    except dbus.exceptions.DBusException as e:
        if mode:
            raise RuntimeError(f'the held call failed: {e}') from e
        error(e)
        return
    if mode:
        mock.held_caller = int(mock.connection.call_blocking(
            'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
            'GetConnectionUnixProcessID', 's', (sender,)))
        return
    reply(*([] if result is None else [result]))


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='o')
def LoadUnit(self, name):
    name = str(name)
    if name not in self.units:
        add_unit(self, name, 'inactive', 'not-found')
    return self.units[name]


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='o')
def GetUnit(self, name):
    unit_object(self, name)
    return self.units[str(name)]


@dbus.service.method(MAIN_IFACE, in_signature='ss', out_signature='o', sender_keyword='sender',
                     async_callbacks=('reply', 'error'))
def StartUnit(self, name, _mode, sender=None, reply=None, error=None):
    changing_call(self, sender, reply, error, lambda: job(self, name, 'active'))


@dbus.service.method(MAIN_IFACE, in_signature='ss', out_signature='o', sender_keyword='sender',
                     async_callbacks=('reply', 'error'))
def StopUnit(self, name, _mode, sender=None, reply=None, error=None):
    changing_call(self, sender, reply, error, lambda: job(self, name, 'inactive'))


@dbus.service.method(MAIN_IFACE, in_signature='ss', out_signature='o', sender_keyword='sender',
                     async_callbacks=('reply', 'error'))
def RestartUnit(self, name, _mode, sender=None, reply=None, error=None):
    changing_call(self, sender, reply, error, lambda: job(self, name, 'active'))


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='')
def ResetFailedUnit(self, name):
    obj = unit_object(self, name)
    if obj.props[UNIT_IFACE]['ActiveState'] == 'failed':
        set_state(obj, 'inactive')
        if str(name) in self.transient:
            obj.props[UNIT_IFACE]['LoadState'] = 'not-found'
            del self.transient[str(name)]


@dbus.service.method(MAIN_IFACE, in_signature='ssa(sv)a(sa(sv))', out_signature='o', sender_keyword='sender',
                     async_callbacks=('reply', 'error'))
def StartTransientUnit(self, name, _mode, properties, _aux, sender=None, reply=None, error=None):
    changing_call(self, sender, reply, error, lambda: start_transient(self, str(name), properties))


def start_transient(mock, name, properties):
    if name in mock.fail_call:
        error, message = mock.fail_call.pop(name)
        raise dbus.exceptions.DBusException(message, name=error)
    path = mock.units.get(name)
    obj = mockobject.objects.get(path) if path else None
    if obj is not None and obj.props[UNIT_IFACE]['LoadState'] != 'not-found':
        raise dbus.exceptions.DBusException(f'Unit {name} was already loaded or has a fragment file.',
                                            name=BUS_NAME + '.UnitExists')
    props = {str(k): v for k, v in properties}
    if obj is None:
        obj = mockobject.objects[add_unit(mock, name)]
    obj.props[UNIT_IFACE]['LoadState'] = 'loaded'
    set_state(obj, 'inactive')
    service = obj.props.setdefault(BUS_NAME + '.Service', {})
    service.update({'Type': str(props.get('Type', 'simple')), 'Result': 'success',
                    'ExecMainStatus': dbus.Int32(0), 'ExecMainCode': dbus.Int32(0),
                    'ExecStart': props.get('ExecStart', dbus.Array([], signature='(sasb)'))})
    mock.transient[name] = str(props.get('CollectMode', 'inactive'))
    if service['Type'] != 'oneshot':
        return job(mock, name, 'active')
    exec_path = str(service['ExecStart'][0][0]) if service['ExecStart'] else ''
    status = mock.exec_status.get(exec_path, 0)
    if status == 'hang':
        mock.fail_job[name] = 'hang'
    elif status != 0:
        mock.fail_job[name] = 'failed'
        service.update({'Result': 'exit-code', 'ExecMainStatus': dbus.Int32(status), 'ExecMainCode': dbus.Int32(1)})
    return job(mock, name, 'failed' if status not in (0, 'hang') else 'inactive')


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='')
def SetExecStatus(self, path, status):
    '''A oneshot transient service running path exits with status ("0", "3", ...; "hang").'''
    self.exec_status[str(path)] = 'hang' if str(status) == 'hang' else int(status)


@dbus.service.method(MAIN_IFACE, in_signature='sba(sv)', out_signature='', sender_keyword='sender',
                     async_callbacks=('reply', 'error'))
def SetUnitProperties(self, name, _runtime, properties, sender=None, reply=None, error=None):
    changing_call(self, sender, reply, error, lambda: set_unit_properties(self, name, properties))


def set_unit_properties(self, name, properties):
    obj = unit_object(self, name)
    kind = str(name).rsplit('.', 1)[-1]
    for prop, value in properties:
        if prop != 'AllowedCPUs' or kind not in CPU_TYPES:
            raise dbus.exceptions.DBusException(f'Cannot set property {prop}, or unknown property.',
                                                name='org.freedesktop.DBus.Error.PropertyReadOnly')
        obj.UpdateProperties(f'{BUS_NAME}.{TYPE_IFACES[kind]}',
                             {'AllowedCPUs': dbus.Array([dbus.Byte(b) for b in value], signature='y')})


@dbus.service.method(MAIN_IFACE, in_signature='', out_signature='', sender_keyword='sender')
def Subscribe(self, sender=None):
    if sender in self.subscribers:
        raise dbus.exceptions.DBusException('Client is already subscribed.',
                                            name=BUS_NAME + '.AlreadySubscribed')
    self.subscribers.add(sender)


@dbus.service.method(MAIN_IFACE, in_signature='', out_signature='', sender_keyword='sender')
def Unsubscribe(self, sender=None):
    if sender not in self.subscribers:
        raise dbus.exceptions.DBusException('Client is not subscribed.', name=BUS_NAME + '.NotSubscribed')
    self.subscribers.discard(sender)


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='o')
def AddUnit(self, name, state):
    return add_unit(self, str(name), str(state))


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='')
def SetActiveState(self, name, state):
    set_state(unit_object(self, name), str(state))


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='')
def FailNextJob(self, name, result):
    self.fail_job[str(unit_object(self, name).props[UNIT_IFACE]['Id'])] = str(result)


@dbus.service.method(MOCK_IFACE, in_signature='sss', out_signature='')
def FailNextCall(self, name, error, message):
    try:
        unit_id = str(unit_object(self, name).props[UNIT_IFACE]['Id'])
    except dbus.exceptions.DBusException:
        unit_id = str(name)     # a transient unit to come: its StartTransientUnit fails
    self.fail_call[unit_id] = (str(error), str(message))


@dbus.service.method(MOCK_IFACE, in_signature='b', out_signature='')
def SetEarlySignals(self, early):
    self.early_signals = bool(early)


@dbus.service.method(MOCK_IFACE, in_signature='us', out_signature='')
def HoldCallAt(self, k, mode):
    if str(mode) not in ('before', 'after') or k < 1:
        raise dbus.exceptions.DBusException(f'HoldCallAt({k}, {mode})', name='org.freedesktop.DBus.Error.InvalidArgs')
    self.hold_at = (self.calls_seen + int(k), str(mode))
    self.held_caller = 0


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='u')
def HeldCaller(self):
    return self.held_caller
