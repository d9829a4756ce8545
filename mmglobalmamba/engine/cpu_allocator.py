"""Which malloc serves CPU tensors, and running a program under tcmalloc or jemalloc.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc's heap keeps the pages of
freed blocks that sit between live ones, so a training step whose big transients are
freed around the tensors it keeps (each checkpointed block's input with ``with_cp``) holds
far more resident memory than it has live tensors: the tiny backbone's ``with_cp`` step at
800x1344 peaks at about 1.9 GB resident with about 0.8 GB live. tcmalloc serves the same
step from size-class spans it reuses, at the same speed, and peaks at about 0.9 GB
(README, "Training at scale"). An allocator is chosen when a process starts
(``LD_PRELOAD``), so the tools that want one re-execute themselves under it
(:func:`reexec_under`) or start child processes with :func:`allocator_env`.
"""
import ctypes
import ctypes.util
import os
import sys

__all__ = ['ALLOCATORS', 'find_allocator', 'resolve_allocator', 'allocator_from_maps',
           'loaded_allocator', 'allocator_env', 'reexec_under', 'release_free_memory']

# name -> (library file names to look for, how to install it)
ALLOCATORS = {
    'tcmalloc': (('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4', 'libtcmalloc_minimal.so',
                  'libtcmalloc.so'),
                 "Debian/Ubuntu: 'apt-get install libtcmalloc-minimal4'; conda: "
                 "'conda install gperftools'"),
    'jemalloc': (('libjemalloc.so.2', 'libjemalloc.so'),
                 "Debian/Ubuntu: 'apt-get install libjemalloc2'; conda: "
                 "'conda install jemalloc'"),
}
_REEXEC_FLAG = 'MMGLOBALMAMBA_ALLOCATOR_REEXEC'


def _check_name(name):
    if name != 'glibc' and name not in ALLOCATORS:
        raise ValueError(f'unknown CPU allocator {name!r}: choose glibc, '
                         + ', '.join(sorted(ALLOCATORS)))


def _search_dirs():
    dirs = [d for d in os.environ.get('LD_LIBRARY_PATH', '').split(':') if d]
    dirs += [os.path.join(sys.prefix, 'lib'), '/usr/lib/x86_64-linux-gnu',
             '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib']
    return dirs


def find_allocator(name, search_dirs=None):
    """Path of the shared library of allocator ``name`` ('tcmalloc' or 'jemalloc').

    Looks in ``search_dirs`` (default: ``LD_LIBRARY_PATH``, the environment's ``lib``, the
    system library folders), then asks ``ctypes.util.find_library``. Raises
    FileNotFoundError, saying how to install it, when it is not there."""
    _check_name(name)
    if name == 'glibc':
        raise ValueError('glibc malloc is built in: it has no library to preload')
    files, hint = ALLOCATORS[name]
    for folder in (search_dirs if search_dirs is not None else _search_dirs()):
        for file in files:
            path = os.path.join(folder, file)
            if os.path.isfile(path):
                return path
    if search_dirs is None:
        found = ctypes.util.find_library(files[0][3:].split('.so')[0])
        if found and os.path.isabs(found):
            return found
    raise FileNotFoundError(f'{name} not found (looked for {", ".join(files)}): install it '
                            f'({hint}) or run with the default allocator (glibc)')


def resolve_allocator(name):
    """``name`` checked to be usable here; 'auto' becomes 'tcmalloc' where it is installed,
    else 'glibc'. Raises FileNotFoundError (how to install it) for a missing one."""
    if name == 'auto':
        try:
            find_allocator('tcmalloc')
            return 'tcmalloc'
        except FileNotFoundError:
            return 'glibc'
    _check_name(name)
    if name != 'glibc':
        find_allocator(name)
    return name


def allocator_from_maps(maps_text):
    """'tcmalloc', 'jemalloc' or 'glibc': the allocator mapped into a process, from the text
    of its ``/proc/PID/maps``."""
    for name in ('tcmalloc', 'jemalloc'):
        if any(f'lib{name}' in line.rsplit('/', 1)[-1] for line in maps_text.splitlines()):
            return name
    return 'glibc'


def loaded_allocator():
    """The allocator serving this process ('glibc' where /proc cannot be read)."""
    try:
        with open('/proc/self/maps') as f:
            return allocator_from_maps(f.read())
    except OSError:
        return 'glibc'


def allocator_env(name, env=None):
    """A copy of ``env`` (default ``os.environ``) whose ``LD_PRELOAD`` loads allocator
    ``name`` first ('glibc': with the known allocators taken out)."""
    _check_name(name)
    env = dict(os.environ if env is None else env)
    known = [f for files, _ in ALLOCATORS.values() for f in files]
    kept = [p for p in env.get('LD_PRELOAD', '').replace(' ', ':').split(':')
            if p and os.path.basename(p) not in known]
    preload = kept if name == 'glibc' else [find_allocator(name)] + kept
    if preload:
        env['LD_PRELOAD'] = ':'.join(preload)
    else:
        env.pop('LD_PRELOAD', None)
    return env


def reexec_under(name, argv=None):
    """Make allocator ``name`` serve this process: return at once if it already does, else
    replace the process by the same command (``argv``: the interpreter's arguments, default
    the ones this process was started with, ``-c`` / ``-m`` included) under it.
    Call it first thing in a program, before work that would be lost. A second re-exec
    that still finds the wrong allocator (a loader that ignores ``LD_PRELOAD``) raises
    RuntimeError instead of looping."""
    _check_name(name)
    if loaded_allocator() == name:
        return
    if os.environ.get(_REEXEC_FLAG) == name:
        raise RuntimeError(f're-executed under {name} (LD_PRELOAD='
                           f'{os.environ.get("LD_PRELOAD", "")!r}) but it is not loaded: '
                           'check that the library matches this machine')
    env = allocator_env(name)
    env[_REEXEC_FLAG] = name
    if argv is None:  # sys.orig_argv (3.10+) keeps -c CODE / -m MODULE; sys.argv does not
        argv = list(getattr(sys, 'orig_argv', [sys.executable] + sys.argv)[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + list(argv), env)


def release_free_memory():
    """Hand the memory the allocator holds in free blocks back to the system (before a
    resident-set measurement): ``malloc_trim`` for glibc, the allocators' own calls for
    tcmalloc and jemalloc. Returns the allocator's name."""
    import gc
    gc.collect()
    name = loaded_allocator()
    try:
        if name == 'tcmalloc':
            ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory()
        elif name == 'jemalloc':  # arena 4096 = MALLCTL_ARENAS_ALL
            ctypes.CDLL(None).mallctl(b'arena.4096.purge', None, None, None, 0)
        else:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return name
