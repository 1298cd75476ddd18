# bench/chart.gp - draws bench/results.png from the data files bench/run
# writes; called as gnuplot -e "dir='...'; out='...'; title='...'" chart.gp
# SPDX-License-Identifier: MIT
set terminal pngcairo size 1400,900 font "sans,10" noenhanced
set output out
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.8
set grid ytics
set key top right
set xtics rotate by -30 left nomirror
set multiplot layout 2,3 title title font "sans,12"

set title "Sequential POSTs, fast local nginx: add and its peers (req/s, log)"
set logscale y
plot dir."/throughput.dat" using 2:xtic(1) title "" lc rgb "#3465a4"
unset logscale y

set title "add_many, nginx answering after 20 ms (req/s)"
plot dir."/many.dat" using 2:xtic(1) title "measured" lc rgb "#4e9a06", \
     "" using 3 title "ideal c / 20 ms" lc rgb "#babdb6"

set title "Targets: measured / target (>= 1 is met)"
set yrange [0:*]
plot dir."/targets.dat" using 2:xtic(1) title "" lc rgb "#f57900", 1 title "" lc rgb "black" lw 2 with lines
set autoscale y

set title "RSS after N sequential adds (MiB)"
set yrange [0:*]
plot dir."/rss.dat" using 2:xtic(1) title "" lc rgb "#75507b"
set autoscale y

set title "Per-call CPU before the network (us)"
set yrange [0:*]
plot dir."/cost.dat" using 2:xtic(1) title "" lc rgb "#c17d11"

unset multiplot
