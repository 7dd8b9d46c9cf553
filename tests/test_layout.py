"""The code's shape: the project's modules import each other without a cycle, and the top level
holds only the entry points, the design's modules, the packages and the tools (README, "Code
layout")."""
import ast
import os

from conftest import REPO_ROOT

TOP_LEVEL_MODULES = {
    # entry points and the design's modules
    'main.py', 'opts.py', 'esc_gen.py', 'urbansound_gen.py', 'dataset.py', 'training.py',
    'evaluation.py', 'checkpoint.py', 'runrecord.py', 'distributed.py', 'runtime.py',
    'schedules.py', 'learning.py',
    'utils.py', 'intermix.py', 'optimizer.py',
    # tools
    'bench.py', 'bench_conv.py', 'report.py', 'predict.py', 'fastconv.py', 'compat.py',
    'blasenv.py', 'allocator.py',
}
PACKAGES = {'models', 'datagen'}


def project_modules():
    """{module name: path} of every project module (top level and the packages)."""
    found = {}
    for name in os.listdir(REPO_ROOT):
        if name.endswith('.py'):
            found[name[:-3]] = os.path.join(REPO_ROOT, name)
    for package in PACKAGES:
        folder = os.path.join(REPO_ROOT, package)
        for name in os.listdir(folder):
            if name.endswith('.py'):
                module = package if name == '__init__.py' else f'{package}.{name[:-3]}'
                found[module] = os.path.join(folder, name)
    return found


def imports_of(path, modules):
    """The project modules ``path`` imports (at any depth of its code)."""
    tree = ast.parse(open(path).read(), filename=path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def find_cycle(graph):
    """A list of modules forming an import cycle, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_planted_cycle_and_accepts_a_tree():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_import_graph_has_no_cycle():
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        deps = imports_of(path, modules)
        # a package's modules are imported through the package; that is not an edge back
        graph[name] = {d for d in deps if d != name and not name.startswith(d + '.')}
    assert 'datagen.pipeline' in graph and 'models' in graph
    assert find_cycle(graph) is None


def test_the_top_level_holds_the_designs_files_and_the_tools_only():
    modules = {n for n in os.listdir(REPO_ROOT) if n.endswith('.py')}
    assert modules == TOP_LEVEL_MODULES
    folders = {n for n in os.listdir(REPO_ROOT)
               if os.path.isdir(os.path.join(REPO_ROOT, n)) and not n.startswith('.')}
    allowed = PACKAGES | {'docs', 'scripts', 'tests', 'reproduction',
                          # made by running things (git-ignored)
                          'data', 'results', '__pycache__'}
    assert folders <= allowed, sorted(folders - allowed)


def test_no_module_imports_the_entry_points():
    """``main.py`` is a command line, not a library: what other modules need of it lives in
    ``runtime.py``, ``runrecord.py`` and the other design modules."""
    modules = project_modules()
    importers = sorted(name for name, path in modules.items()
                       if name != 'main' and 'main' in imports_of(path, modules))
    assert importers == []


def test_training_py_keeps_the_updater_and_the_trainer_wiring_only():
    """The 10-crop test, the run record, the snapshot files and the MPI plumbing have rooms of
    their own; ``training.py`` stays below 800 lines."""
    with open(os.path.join(REPO_ROOT, 'training.py')) as f:
        tree = ast.parse(f.read())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert {'MixingUpdater', 'train_split', 'SnapshotSchedule'} <= names
    assert not names & {'TenCropEvaluator', 'fgsm_errors', 'settings_of', 'all_ranks_ok',
                        'save_npz_uncompressed', 'code_record'}
    assert len(tree.body) and tree.body[-1].end_lineno <= 800


def test_no_network_module_imports_another_network():
    """Schedules live in ``schedules.py``, not copied from one network class into another."""
    modules = project_modules()
    networks = {n for n in modules if n.startswith('models.') and n != 'models.common'}
    for name in sorted(networks):
        assert not imports_of(modules[name], modules) & (networks - {name}), name


def test_the_schedule_table_has_a_row_with_its_source_for_every_network_and_dataset():
    import models
    import schedules
    from datagen import registry
    for net in models.archs:
        for dataset in registry.DATASETS:
            row = schedules.SCHEDULES[net, dataset]
            assert row.source and row.nEpochs > 0 and row.LR > 0
