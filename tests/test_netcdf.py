"""netCDF files as climate, ocean and simulation codes write them: written here with the
netCDF4 library itself (netCDF-4 and classic), read back through stsr's reader, and the
upscaled output checked with the library again (attributes, dimension names, time units)."""
import os

import numpy as np
import pytest

from stsr_core import StsrError
from stsr_core.io import open_series_reader, open_series_writer, read_series, write_series
from stsr_run import main_here
from test_engine import smooth_series

netCDF4 = pytest.importorskip("netCDF4", reason="netCDF4 is not installed (Debian: "
                              "python3-netcdf4; make setup installs it)")

LAT = np.array([30.0, 20.0, 10.0, 0.0])            # north to south, as many files store it


def temp_field(t, lev, lat, lon):
    """A known smooth function of the coordinates, to check orientation after reading."""
    return (280 + t + 0.1 * lev + 0.5 * lat + 0.02 * lon).astype(np.float32)


def write_ocean_file(path, fmt="NETCDF4", nt=4, fill=None, lev_positions=(0.0, 10.0, 20.0)):
    """(time, lev, lat, lon) temperature with CF attributes, a 2-D surface field, time bounds
    and packed-looking attributes, as a model output would have them."""
    lon = np.arange(5) * 2.5
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.title = "tiny ocean"
        d.history = "made by the test"
        d.createDimension("time", None)
        d.createDimension("lev", len(lev_positions))
        d.createDimension("lat", len(LAT))
        d.createDimension("lon", len(lon))
        d.createDimension("nv", 2)
        t = d.createVariable("time", "f8", ("time",))
        t.units, t.calendar, t.bounds = "days since 2000-01-01", "noleap", "time_bnds"
        tb = d.createVariable("time_bnds", "f8", ("time", "nv"))
        lv = d.createVariable("lev", "f4", ("lev",))
        lv.positive, lv.units = "down", "m"
        lv[:] = lev_positions
        la = d.createVariable("lat", "f4", ("lat",))
        la.units, la.standard_name = "degrees_north", "latitude"
        la[:] = LAT
        lo = d.createVariable("lon", "f4", ("lon",))
        lo.units = "degrees_east"
        lo[:] = lon
        v = d.createVariable("temp", "f4", ("time", "lev", "lat", "lon"), fill_value=-999.0)
        v.units, v.long_name, v.valid_range = "K", "sea temperature", np.array([0, 400], "f4")
        sst = d.createVariable("sst", "f4", ("time", "lat", "lon"))
        sst.units = "K"
        T, K, J, I = np.meshgrid(np.arange(nt) * 0.5, lv[:], LAT, lon, indexing="ij")
        for i in range(nt):
            t[i] = 0.5 * i
            tb[i] = [0.5 * i - 0.25, 0.5 * i + 0.25]
            v[i] = temp_field(T[i], K[i], J[i], I[i])
            sst[i] = temp_field(T[i, 0], 0, J[i, 0], I[i, 0])
        if fill is not None:
            v[fill] = np.ma.masked


def test_reads_a_netcdf4_file_with_its_coordinates_times_and_orientation(tmp_path):
    p = str(tmp_path / "ocean.nc")
    write_ocean_file(p)
    s = read_series(p)
    assert s.names == ["temp"]             # the largest grid; bounds and sst left out
    assert s.dims == (5, 4, 3) and s.n_times == 4
    np.testing.assert_allclose(s.times, [0, 0.5, 1, 1.5])
    np.testing.assert_allclose(s.origin, (0, 0, 0))
    np.testing.assert_allclose(s.spacing, (2.5, 10, 10))
    # latitude is stored north to south: flipped so that y grows with the point index
    t, lev, lat, lon = np.meshgrid(s.times, [0, 10, 20], [0, 10, 20, 30], np.arange(5) * 2.5,
                                   indexing="ij")
    np.testing.assert_allclose(s.variables["temp"], temp_field(t, lev, lat, lon), rtol=1e-6)
    meta = s.metadata["netcdf"]
    assert meta["dims"] == {"t": "time", "z": "lev", "y": "lat", "x": "lon"}
    assert meta["coords"]["t"]["units"] == "days since 2000-01-01"
    assert meta["descending"] == ["y"]


def test_reads_a_classic_file_and_a_2d_variable_as_one_z_layer(tmp_path):
    p = str(tmp_path / "classic.nc")
    write_ocean_file(p, fmt="NETCDF3_CLASSIC")
    s = read_series(p, arrays=["sst"])
    assert s.names == ["sst"] and s.dims == (5, 4, 1)
    np.testing.assert_allclose(s.variables["sst"][2, 0, :, 1],
                               temp_field(1.0, 0, np.array([0, 10, 20, 30]), 2.5), rtol=1e-6)


def test_dimension_order_comes_from_the_coordinates_axis_attributes(tmp_path):
    p = str(tmp_path / "xyz.nc")
    data = np.random.default_rng(0).random((3, 5, 4, 2)).astype(np.float32)   # t, x, y, z
    with netCDF4.Dataset(p, "w") as d:
        for name, n, axis in (("t", 3, "T"), ("a", 5, "X"), ("b", 4, "Y"), ("c", 2, "Z")):
            d.createDimension(name, n)
            c = d.createVariable(name, "f8", (name,))
            c.axis = axis
            c[:] = np.arange(n) * 0.5
        d.createVariable("f", "f4", ("t", "a", "b", "c"))[:] = data
    s = read_series(p)
    assert s.dims == (5, 4, 2)
    np.testing.assert_array_equal(s.variables["f"], data.transpose(0, 3, 2, 1))


def test_irregular_coordinate_is_an_error_naming_the_file_and_the_coordinate(tmp_path):
    p = str(tmp_path / "levels.nc")
    write_ocean_file(p, lev_positions=(0.0, 10.0, 30.0))
    with pytest.raises(StsrError, match=r"coordinate 'lev' of '.*levels\.nc' is not "
                                        r"regularly spaced: step 10 from point 0 to 1 \(0 to 10\), 15 on average"):
        read_series(p)


def test_missing_values_are_an_error_naming_the_variable_and_the_first_point(tmp_path):
    p = str(tmp_path / "land.nc")
    write_ocean_file(p, fill=(2, 1, 0, 3))      # time 2, lev 1, lat 30 (stored first), lon 3
    with pytest.raises(StsrError, match=r"variable 'temp' in '.*land\.nc' has 1 missing "
                                        r"value.*timestep 2 \(time 1\), point \(i=3, j=3, k=1\)"):
        read_series(p)


def test_arrays_choose_variables_and_variables_on_other_grids_are_refused(tmp_path):
    p = str(tmp_path / "ocean.nc")
    write_ocean_file(p)
    with pytest.raises(StsrError, match=r"'sst' in .* has dimensions \('time', 'lat', 'lon'\)"
                                        r".*must share one grid"):
        read_series(p, arrays=["temp", "sst"])
    with pytest.raises(StsrError, match=r"no array named 'salt'.*available: temp, sst"):
        read_series(p, arrays=["salt"])


def test_written_file_keeps_attributes_dimension_names_and_direction(tmp_path):
    src, out = str(tmp_path / "ocean.nc"), str(tmp_path / "copy.nc")
    write_ocean_file(src)
    s = read_series(src)
    write_series(s, out)
    with netCDF4.Dataset(out) as d:
        assert d.title == "tiny ocean"
        assert d.history.endswith("\nmade by the test") and "stsr" in d.history
        assert d.dimensions["time"].isunlimited()
        assert d["temp"].dimensions == ("time", "lev", "lat", "lon")
        assert d["temp"].units == "K" and d["temp"].long_name == "sea temperature"
        assert "valid_range" not in d["temp"].ncattrs()    # describes stored values only
        assert d["time"].units == "days since 2000-01-01" and d["time"].calendar == "noleap"
        assert "bounds" not in d["time"].ncattrs()        # time_bnds is not written
        np.testing.assert_allclose(d["lat"][:], LAT)       # north to south again
        assert d["lat"].standard_name == "latitude" and d["lev"].positive == "down"
        with netCDF4.Dataset(src) as orig:
            np.testing.assert_allclose(d["temp"][:], orig["temp"][:], rtol=1e-6)
    back = read_series(out)
    assert not back.same_grid(s)
    np.testing.assert_allclose(back.variables["temp"], s.variables["temp"])


def test_step_reader_gives_each_step_as_the_whole_reader(tmp_path):
    p = str(tmp_path / "ocean.nc")
    write_ocean_file(p)
    whole = read_series(p)
    r = open_series_reader(p)
    assert r.variables == ["temp"] and r.n_times == 4 and r.grid == whole.grid
    np.testing.assert_array_equal(r.read_step(3)["temp"], whole.variables["temp"][3])


def test_a_series_from_another_format_round_trips_with_its_vectors(tmp_path):
    """A vector is written as one variable per component (ParaView's CF reader takes no
    fourth spatial dimension) naming its vector, and read back as one vector; the spatial
    coordinates carry no axis attribute (the CF reader would make them longitude and
    latitude), time keeps axis T (how the CF reader finds it)."""
    s = smooth_series(nx=6, ny=5, nz=4, nt=3)
    s.variables.update({f"vel_{i}": s.variables["rho"] * (i + 1) for i in range(3)})
    s.components = {"vel": ["vel_0", "vel_1", "vel_2"]}
    s.validate()
    p = str(tmp_path / "s.nc")
    write_series(s, p, compression="none")
    with netCDF4.Dataset(p) as d:
        for i in range(3):
            assert d[f"vel_{i}"].dimensions == ("time", "z", "y", "x")
            assert d[f"vel_{i}"].stsr_vector == "vel"
        assert "vel" not in d.variables
        np.testing.assert_allclose(d["x"][:], 1 + 0.5 * np.arange(6))
        assert all("axis" not in d[c].ncattrs() for c in ("x", "y", "z"))
        assert d["time"].axis == "T"
    back = read_series(p)
    assert not back.same_grid(s) and back.components == {"vel": ["vel_0", "vel_1", "vel_2"]}
    for n in s.variables:
        np.testing.assert_allclose(back.variables[n], s.variables[n], rtol=1e-6)
    assert read_series(p, arrays=["vel"]).names == ["vel_0", "vel_1", "vel_2"]
    step = open_series_reader(p, arrays=["vel"])
    assert step.components == {"vel": ["vel_0", "vel_1", "vel_2"]}
    np.testing.assert_array_equal(step.read_step(2)["vel_1"], back.variables["vel_1"][2])


def test_an_aborted_writer_leaves_no_file_behind(tmp_path):
    s = smooth_series(nx=4, ny=3, nz=2, nt=2)
    p = tmp_path / "gone.nc"
    with pytest.raises(RuntimeError):
        with open_series_writer(str(p), s.grid, s.times, s.names, {}) as w:
            w.write_step(0, {n: v[0] for n, v in s.variables.items()})
            raise RuntimeError("stopped")
    assert os.listdir(tmp_path) == []


def test_cli_fits_a_netcdf_file_and_upscales_to_netcdf_with_its_attributes(tmp_path):
    write_ocean_file(str(tmp_path / "ocean.nc"))
    code, out, err = main_here("fit", "ocean.nc", "-o", "m.stsr", "--quiet", "--device", "cpu",
                               "--set", "flow_iters=30", cwd=tmp_path)
    assert code == 0, err
    code, out, err = main_here("upscale", "m.stsr", "-o", "out/up.nc", "--scale", "2",
                               "--time-scale", "2", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert code == 0, err
    with netCDF4.Dataset(tmp_path / "out" / "up.nc") as d:
        assert d["temp"].dimensions == ("time", "lev", "lat", "lon")
        assert d["temp"].shape == (7, 5, 7, 9)
        np.testing.assert_allclose(d["time"][:], np.arange(7) * 0.25)
        assert d["time"].units == "days since 2000-01-01"
        np.testing.assert_allclose(d["lat"][:], np.arange(30, -1, -5))
        assert d.title == "tiny ocean" and d["temp"].units == "K"
        with netCDF4.Dataset(tmp_path / "ocean.nc") as src:   # kept points and steps
            np.testing.assert_allclose(d["temp"][::2, ::2, ::2, ::2], src["temp"][:],
                                       atol=1e-3)
