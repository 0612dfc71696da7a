# Included by _direct.pyx before the drivers that pack filters (_run_corr, _pw_run).
#
# ---------------------------------------------------------------------------------------
# Packed filters kept across calls. Every driver packs the filters it reads into the
# order its micro-kernel wants them (_pack_weights, fc_pw_pack), once per call: for a
# batch-1 layer with 512 filters of 512 x 3 x 3 that is 9.4 MB read and written for
# 0.23 GFLOP of work. A caller that knows its filters did not change since the last call
# (fastconv.layers.Conv2d and Conv1d, in inference) passes a dict, `packs`; a pack is
# kept there under a key naming everything its content depends on -- the filters'
# address, every stride and tap offset the packing loop reads them with, the block
# boundaries it cuts them into, the element size -- so that a key found is a pack equal
# to the one this call would make. Whether the filters' values changed is the caller's
# business (it drops the dict when they may have). A bare conv2d passes None: packed per
# call, as always.
cdef Py_ssize_t _PACKS_MAX = 8  # packs kept per dict (calls with new shapes add keys)


cdef class _Pack:
    """One packed-filter buffer, freed with the object (PyMem_Raw: tracemalloc sees it)."""
    cdef void* data
    cdef Py_ssize_t nbytes

    def __cinit__(self, Py_ssize_t nbytes):
        self.data = malloc(max(1, nbytes))
        if self.data == NULL:
            raise MemoryError()
        self.nbytes = nbytes

    def __dealloc__(self):
        free(self.data)


cdef _Pack _pack_lookup(object packs, object key):
    # The pack kept under key, or None (also when there is no dict).
    if packs is None:
        return None
    return packs.get(key)


cdef void _pack_keep(object packs, object key, _Pack pk):
    # Keeps pk under key, dropping the oldest packs beyond _PACKS_MAX.
    if packs is None:
        return
    packs[key] = pk
    while len(packs) > _PACKS_MAX:
        del packs[next(iter(packs))]


def _packs_info(object packs):
    """Testing hook: (number of packs, their bytes) in a dict a layer keeps."""
    cdef _Pack pk
    cdef Py_ssize_t total = 0
    for pk in packs.values():
        total += pk.nbytes
    return len(packs), total
